// Command chanbench measures a Go channel handoff between two goroutines.
//
// The main goroutine sends -n ints on a channel of the given -capacity (0 makes
// it unbuffered) while a second goroutine receives them. After a short warm-up it
// prints the cost per item in nanoseconds, as one number on one line, so that
// benchmarks/bench_channel.py can put Go next to the Python contestants.
package main

import (
	"flag"
	"fmt"
	"os"
	"time"
)

func handoff(capacity, n int) time.Duration {
	ch := make(chan int, capacity)
	done := make(chan struct{})
	go func() {
		for i := 0; i < n; i++ {
			<-ch
		}
		close(done)
	}()
	start := time.Now()
	for i := 0; i < n; i++ {
		ch <- i
	}
	<-done
	return time.Since(start)
}

func main() {
	capacity := flag.Int("capacity", 1024, "channel capacity (0: unbuffered)")
	n := flag.Int("n", 1000000, "items to hand over")
	flag.Parse()
	if *capacity < 0 || *n < 1 {
		fmt.Fprintln(os.Stderr, "chanbench: need -capacity >= 0 and -n >= 1")
		os.Exit(2)
	}
	handoff(*capacity, *n/10+1) // warm-up: start the scheduler's threads
	elapsed := handoff(*capacity, *n)
	fmt.Printf("%.3f\n", float64(elapsed.Nanoseconds())/float64(*n))
}
