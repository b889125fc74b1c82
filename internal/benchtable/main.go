// Command benchtable reads `go test -bench` output on stdin, copies it to
// stdout as it comes, and prints at the end one Markdown table of the
// figures issue 14 sets targets for: `make bench` pipes into it.
//
// Each row's figure, its ratio to the signing ceiling the benchmark measured
// in the same run (ratio_to_ceiling, in the ES256 or RS256 column) and the
// Redis round trips where counted come from the benchmarks' own metrics;
// the mapping is the rows table in table.go.
package main

import (
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
)

func main() {
	res, err := scan(os.Stdin, os.Stdout)
	if err != nil {
		fmt.Fprintln(os.Stderr, "benchtable:", err)
		os.Exit(1)
	}
	if err := report(os.Stdout, res); err != nil {
		fmt.Fprintln(os.Stderr, "benchtable:", err)
		os.Exit(1)
	}
}

// report prints the summary: the signing rates the run measured, then the table.
func report(w io.Writer, res results) error {
	lines := build(res)
	if len(lines) == 0 {
		_, err := fmt.Fprintln(w, "\nbenchtable: no benchmark of the table ran")
		return err
	}
	var sb strings.Builder
	sb.WriteString("\n## Benchmark summary\n\n")
	for _, alg := range []string{"es256", "rs256"} {
		if lo, hi, ok := span(res, alg+"_signs/s/core"); ok {
			fmt.Fprintf(&sb, "%s signing (go-jose, one core), measured by the benchmarks in this run: %s–%s signatures/s.\n",
				strings.ToUpper(alg), number(lo), number(hi))
		}
	}
	if p := procs(res); p > 0 {
		fmt.Fprintf(&sb, "GOMAXPROCS %d; the load generator shares the cores.\n", p)
	}
	sb.WriteString("\n")
	if _, err := io.WriteString(w, sb.String()); err != nil {
		return err
	}
	return write(w, lines)
}

// span is the lowest and highest value of metric across the results.
func span(res results, metric string) (lo, hi float64, ok bool) {
	var vs []float64
	for _, r := range res {
		if v, has := r.metrics[metric]; has {
			vs = append(vs, v)
		}
	}
	if len(vs) == 0 {
		return 0, 0, false
	}
	return slices.Min(vs), slices.Max(vs), true
}

// procs is the GOMAXPROCS of the run's benchmarks (the largest seen).
func procs(res results) int {
	p := 0
	for _, r := range res {
		p = max(p, r.procs)
	}
	return p
}
