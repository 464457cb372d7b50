// Command pipeline times the seeds' Go pipeline, generate -> square -> print.
//
// generate and square are the seed's functions as written: each stage is one
// goroutine that writes to an unbuffered channel it returns and closes. The only
// change is the last stage: main sums the squares instead of printing them (a
// million fmt.Println calls would time the terminal, not the pipeline). The -n
// inputs are 0..n-1, built into a slice before the clock starts, as the seed's
// variadic generate(nums ...int) takes them. After a short warm-up it checks the
// sum and prints the cost per item in nanoseconds, one number on one line, so that
// benchmarks/bench_pipeline.py can put Go next to the Python contestants.
package main

import (
	"flag"
	"fmt"
	"os"
	"time"
)

func generate(nums ...int) <-chan int {
	out := make(chan int)
	go func() {
		for _, n := range nums {
			out <- n
		}
		close(out)
	}()
	return out
}

func square(in <-chan int) <-chan int {
	out := make(chan int)
	go func() {
		for n := range in {
			out <- n * n
		}
		close(out)
	}()
	return out
}

// run sums square(generate(nums...)) and returns the sum and the time it took.
func run(nums []int) (int, time.Duration) {
	start := time.Now()
	total := 0
	for val := range square(generate(nums...)) {
		total += val // the seed prints val here
	}
	return total, time.Since(start)
}

func main() {
	n := flag.Int("n", 1000000, "ints to send through the pipeline")
	flag.Parse()
	if *n < 1 {
		fmt.Fprintln(os.Stderr, "pipeline: need -n >= 1")
		os.Exit(2)
	}
	nums := make([]int, *n)
	for i := range nums {
		nums[i] = i
	}
	run(nums[:*n/10+1]) // warm-up: start the scheduler's threads
	total, elapsed := run(nums)
	want := 0
	for _, v := range nums {
		want += v * v
	}
	if total != want {
		fmt.Fprintf(os.Stderr, "pipeline: sum %d, want %d\n", total, want)
		os.Exit(1)
	}
	fmt.Printf("%.3f\n", float64(elapsed.Nanoseconds())/float64(*n))
}
