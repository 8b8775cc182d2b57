// Command promql-check parses PromQL expressions with Prometheus' own parser (the one promtool
// uses) and names the metrics each selects. Building all of promtool pulls in the TSDB, service
// discovery and the rule engine; the tests need only the parser.
//
// Input on stdin: a JSON array of expressions. Output on stdout: a JSON array, one object per
// expression: {"expr": ..., "error": "" or the parser's message, "metrics": [names]}. Exit 0
// when every expression parses, 1 when one does not, 2 on unreadable input.
package main

import (
	"encoding/json"
	"fmt"
	"os"
	"sort"

	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/promql/parser"
)

type result struct {
	Expr    string   `json:"expr"`
	Error   string   `json:"error"`
	Metrics []string `json:"metrics"`
}

func metricNames(expr parser.Expr) []string {
	seen := map[string]bool{}
	parser.Inspect(expr, func(node parser.Node, _ []parser.Node) error {
		sel, ok := node.(*parser.VectorSelector)
		if !ok {
			return nil
		}
		if sel.Name != "" {
			seen[sel.Name] = true
		}
		for _, m := range sel.LabelMatchers {
			if m.Name == labels.MetricName && m.Type == labels.MatchEqual {
				seen[m.Value] = true
			}
		}
		return nil
	})
	names := make([]string, 0, len(seen))
	for n := range seen {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

func main() {
	var exprs []string
	if err := json.NewDecoder(os.Stdin).Decode(&exprs); err != nil {
		fmt.Fprintf(os.Stderr, "promql-check: stdin is not a JSON array of strings: %v\n", err)
		os.Exit(2)
	}
	p := parser.NewParser(parser.Options{})
	results := make([]result, 0, len(exprs))
	failed := false
	for _, text := range exprs {
		r := result{Expr: text, Metrics: []string{}}
		expr, err := p.ParseExpr(text)
		if err != nil {
			r.Error = err.Error()
			failed = true
		} else {
			r.Metrics = metricNames(expr)
		}
		results = append(results, r)
	}
	if err := json.NewEncoder(os.Stdout).Encode(results); err != nil {
		fmt.Fprintf(os.Stderr, "promql-check: %v\n", err)
		os.Exit(2)
	}
	if failed {
		os.Exit(1)
	}
}
