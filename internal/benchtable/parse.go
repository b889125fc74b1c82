package main

import (
	"bufio"
	"fmt"
	"io"
	"path"
	"strconv"
	"strings"
)

// result is one benchmark's line of `go test -bench` output.
type result struct {
	key     string             // package's last element + "." + name: "e2e.BenchmarkLogin/bolt"
	procs   int                // GOMAXPROCS, the name's -N suffix (0 if none)
	metrics map[string]float64 // unit → value, ns/op included
}

// results are a run's benchmark lines by key; a key seen twice (-count)
// keeps its last line.
type results map[string]result

// scan copies every line of in to out and collects the benchmark lines.
func scan(in io.Reader, out io.Writer) (results, error) {
	res := results{}
	var pkg, pending string
	sc := bufio.NewScanner(in)
	sc.Buffer(make([]byte, 64*1024), 1024*1024)
	for sc.Scan() {
		line := sc.Text()
		if _, err := fmt.Fprintln(out, line); err != nil {
			return nil, err
		}
		if p, ok := strings.CutPrefix(line, "pkg: "); ok {
			pkg = path.Base(strings.TrimSpace(p))
			continue
		}
		fields := strings.Fields(line)
		// A benchmark that logs may leave its name alone on a line and print
		// its figures on a later one.
		if len(fields) == 1 && strings.HasPrefix(fields[0], "Benchmark") {
			pending = fields[0]
			continue
		}
		if pending != "" && len(fields) > 0 && isCount(fields[0]) {
			fields = append([]string{pending}, fields...)
		}
		if r, ok := parseLine(pkg, fields); ok {
			res[r.key] = r
			pending = ""
		}
	}
	return res, sc.Err()
}

// parseLine reads `BenchmarkX/sub-2  N  v1 unit1  v2 unit2 ...`.
func parseLine(pkg string, fields []string) (result, bool) {
	if len(fields) < 4 || len(fields)%2 != 0 || !strings.HasPrefix(fields[0], "Benchmark") || !isCount(fields[1]) {
		return result{}, false
	}
	name, procs := splitProcs(fields[0])
	r := result{key: pkg + "." + name, procs: procs, metrics: map[string]float64{}}
	for i := 2; i < len(fields); i += 2 {
		v, err := strconv.ParseFloat(fields[i], 64)
		if err != nil {
			return result{}, false
		}
		r.metrics[fields[i+1]] = v
	}
	return r, true
}

func isCount(s string) bool {
	n, err := strconv.Atoi(s)
	return err == nil && n > 0
}

// splitProcs splits "BenchmarkX/sub-2" into "BenchmarkX/sub" and 2.
func splitProcs(name string) (string, int) {
	i := strings.LastIndexByte(name, '-')
	if i < 0 {
		return name, 0
	}
	n, err := strconv.Atoi(name[i+1:])
	if err != nil || n <= 0 {
		return name, 0
	}
	return name[:i], n
}
