// etcd_load: a tiny load generator on etcd's own gRPC client (go.etcd.io/etcd/clientv3), for
// `phalanx bench` (benchmarks/phalanx_bench.py). Builds offline on Debian bookworm:
//
//	apt-get install golang-go golang-etcd-server-dev
//	GO111MODULE=off GOPATH=/usr/share/gocode go build -o etcd_load main.go
//
// Modes:
//
//	-mode load: N puts (random keys over -keyspace, -value-size bytes) from C concurrent clients
//	  (each its own clientv3 connection unless -conns is smaller), one JSON line on stdout:
//	  {"ops": N, "ok": .., "errors": .., "seconds": .., "rps": .., "p50_ms": .., "p99_ms": ..}
//	-mode rate: open loop at a fixed rate: a put (or a linearizable get with -op get) every
//	  1/-rate seconds for -duration, each in its own goroutine on one of -conns connections (8 by
//	  default); latency from the request's scheduled time; one JSON line on stdout:
//	  {"sent": .., "ok": .., "errors": .., "seconds": .., "achieved_rate": .., "p50_ms": ..,
//	  "p90_ms": .., "p99_ms": .., "p999_ms": .., "max_ms": ..}
//	-mode gap: open-loop writer for failover: every -interval a put in its own goroutine with a
//	  -timeout deadline; one line per put on stdout, "<start unix ns> <end unix ns> <0|1>", until
//	  stdin closes.
package main

import (
	"bufio"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"math/rand"
	"os"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go.etcd.io/etcd/clientv3"
)

func main() {
	endpoints := flag.String("endpoints", "127.0.0.1:2379", "comma-separated endpoints")
	mode := flag.String("mode", "load", "load or gap")
	total := flag.Int("n", 1000, "puts (load)")
	clients := flag.Int("c", 1, "concurrent clients (load)")
	conns := flag.Int("conns", 0, "gRPC connections (load; 0 = one per client, at most 64)")
	keyspace := flag.Int("keyspace", 100000, "random keys over this many")
	valueSize := flag.Int("value-size", 3, "value bytes (redis-benchmark's default is 3)")
	interval := flag.Duration("interval", 5*time.Millisecond, "put interval (gap)")
	timeout := flag.Duration("timeout", 500*time.Millisecond, "per-put deadline (gap)")
	rate := flag.Float64("rate", 500, "requests per second (rate)")
	duration := flag.Duration("duration", 10*time.Second, "how long to send (rate)")
	op := flag.String("op", "put", "put or get (rate)")
	flag.Parse()
	eps := strings.Split(*endpoints, ",")
	newClient := func() *clientv3.Client {
		cli, err := clientv3.New(clientv3.Config{Endpoints: eps, DialTimeout: 5 * time.Second})
		if err != nil {
			fmt.Fprintln(os.Stderr, "connect:", err)
			os.Exit(2)
		}
		return cli
	}
	value := strings.Repeat("x", *valueSize)
	if *mode == "gap" {
		cli := newClient()
		out := make(chan string, 4096)
		done := make(chan struct{})
		go func() {
			_, _ = bufio.NewReader(os.Stdin).ReadString(0)
			close(done)
		}()
		var wg sync.WaitGroup
		ticker := time.NewTicker(*interval)
		seq := 0
		go func() {
			w := bufio.NewWriter(os.Stdout)
			for line := range out {
				w.WriteString(line)
				if len(out) == 0 {
					w.Flush()
				}
			}
			w.Flush()
		}()
	loop:
		for {
			select {
			case <-done:
				break loop
			case <-ticker.C:
				seq++
				wg.Add(1)
				go func(seq int) {
					defer wg.Done()
					began := time.Now()
					ctx, cancel := context.WithTimeout(context.Background(), *timeout)
					_, err := cli.Put(ctx, fmt.Sprintf("gap:%d", seq), value)
					cancel()
					ok := 0
					if err == nil {
						ok = 1
					}
					out <- fmt.Sprintf("%d %d %d\n", began.UnixNano(), time.Now().UnixNano(), ok)
				}(seq)
			}
		}
		wg.Wait()
		close(out)
		time.Sleep(50 * time.Millisecond)
		return
	}
	if *mode == "rate" {
		nconns := *conns
		if nconns <= 0 {
			nconns = 8
		}
		runRate(newClient, nconns, *rate, *duration, *op, *keyspace, value)
		return
	}
	nconns := *conns
	if nconns <= 0 {
		nconns = *clients
		if nconns > 64 {
			nconns = 64
		}
	}
	pool := make([]*clientv3.Client, nconns)
	for i := range pool {
		pool[i] = newClient()
	}
	// Warm up every connection (the first request pays the connection set-up).
	for _, cli := range pool {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		_, _ = cli.Put(ctx, "warmup", value)
		cancel()
	}
	var next, errors int64
	latencies := make([][]time.Duration, *clients)
	var wg sync.WaitGroup
	began := time.Now()
	for i := 0; i < *clients; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			cli := pool[i%nconns]
			rng := rand.New(rand.NewSource(int64(i) + 1))
			for atomic.AddInt64(&next, 1) <= int64(*total) {
				key := fmt.Sprintf("key:%012d", rng.Intn(*keyspace))
				t := time.Now()
				ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
				_, err := cli.Put(ctx, key, value)
				cancel()
				if err != nil {
					atomic.AddInt64(&errors, 1)
					continue
				}
				latencies[i] = append(latencies[i], time.Since(t))
			}
		}(i)
	}
	wg.Wait()
	seconds := time.Since(began).Seconds()
	var all []time.Duration
	for _, l := range latencies {
		all = append(all, l...)
	}
	sort.Slice(all, func(a, b int) bool { return all[a] < all[b] })
	pct := func(p float64) float64 {
		if len(all) == 0 {
			return 0
		}
		idx := int(p * float64(len(all)-1))
		return float64(all[idx].Microseconds()) / 1000.0
	}
	result := map[string]interface{}{
		"ops": *total, "ok": len(all), "errors": errors, "seconds": seconds,
		"rps": float64(len(all)) / seconds, "p50_ms": pct(0.50), "p99_ms": pct(0.99),
		"p999_ms": pct(0.999), "clients": *clients, "conns": nconns,
	}
	encoded, _ := json.Marshal(result)
	fmt.Println(string(encoded))
	for _, cli := range pool {
		cli.Close()
	}
}

func runRate(newClient func() *clientv3.Client, nconns int, rate float64, duration time.Duration,
	op string, keyspace int, value string) {
	pool := make([]*clientv3.Client, nconns)
	for i := range pool {
		pool[i] = newClient()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		_, _ = pool[i].Put(ctx, "warmup", value)
		cancel()
	}
	total := int(rate * duration.Seconds())
	interval := time.Duration(float64(time.Second) / rate)
	latencies := make([]time.Duration, total)
	oks := make([]bool, total)
	var wg sync.WaitGroup
	rng := rand.New(rand.NewSource(1))
	start := time.Now().Add(50 * time.Millisecond)
	for i := 0; i < total; i++ {
		due := start.Add(time.Duration(i) * interval)
		if wait := time.Until(due); wait > 0 {
			time.Sleep(wait)
		}
		key := fmt.Sprintf("key:%012d", rng.Intn(keyspace))
		wg.Add(1)
		go func(i int, due time.Time, key string) {
			defer wg.Done()
			cli := pool[i%nconns]
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			var err error
			if op == "get" {
				_, err = cli.Get(ctx, key)
			} else {
				_, err = cli.Put(ctx, key, value)
			}
			cancel()
			latencies[i] = time.Since(due)
			oks[i] = err == nil
		}(i, due, key)
	}
	sendEnd := time.Since(start).Seconds()
	wg.Wait()
	var good []time.Duration
	errors := 0
	for i := range latencies {
		if oks[i] {
			good = append(good, latencies[i])
		} else {
			errors++
		}
	}
	sort.Slice(good, func(a, b int) bool { return good[a] < good[b] })
	pct := func(p float64) float64 {
		if len(good) == 0 {
			return 0
		}
		idx := int(p * float64(len(good)))
		if idx >= len(good) {
			idx = len(good) - 1
		}
		return float64(good[idx].Microseconds()) / 1000.0
	}
	result := map[string]interface{}{
		"target_rate": rate, "sent": total, "ok": len(good), "errors": errors,
		"seconds": sendEnd, "achieved_rate": float64(len(good)) / sendEnd,
		"p50_ms": pct(0.50), "p90_ms": pct(0.90), "p99_ms": pct(0.99), "p999_ms": pct(0.999),
		"max_ms": pct(1.0), "op": op, "conns": nconns,
	}
	encoded, _ := json.Marshal(result)
	fmt.Println(string(encoded))
	for _, cli := range pool {
		cli.Close()
	}
}
