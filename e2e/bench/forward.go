package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"time"
)

// forwardResult is one run of the store-and-forward benchmark.
type forwardResult struct {
	Points      int64
	Backlog     int64         // the edge's WAL bytes not yet forwarded when the central agent started
	Forward     time.Duration // central agent started -> the edge's output had nothing left to send
	InCentral   time.Duration // central agent started -> its DuckDB held every point
	EdgeCPU     float64       // CPU seconds of the edge while forwarding
	CentralCPU  float64       // CPU seconds of the central agent until its DuckDB held every point
	EdgeRSS     int64         // peak RSS of the edge (whole run)
	CentralRSS  int64
	CentralRows int64
}

// outputStats is the part of an output's /stats section the bench reads.
type outputStats struct {
	LagRecords uint64 `json:"lag_records"`
	LagBytes   int64  `json:"lag_bytes"`
	SentPoints uint64 `json:"sent_points"`
}

func (a *agentProc) output(ctx context.Context, name string) (outputStats, error) {
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, a.adminURL("/stats"), nil)
	resp, err := a.client.Do(req)
	if err != nil {
		return outputStats{}, fmt.Errorf("GET /stats: %w", err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	var st struct {
		Outputs map[string]outputStats `json:"outputs"`
	}
	if err := json.Unmarshal(body, &st); err != nil {
		return outputStats{}, fmt.Errorf("GET /stats: %w: %.200s", err, body)
	}
	o, ok := st.Outputs[name]
	if !ok {
		return o, fmt.Errorf("GET /stats: no output %q in %.200s", name, body)
	}
	return o, nil
}

// runForward builds a backlog of points on an edge agent whose influx
// output points at a central agent that is not running, then starts the
// central agent and times how fast the backlog moves across: forwarding
// throughput from a backlog, as after a link that was down.
func runForward(e env, sync string, series int, points int64) (res forwardResult, err error) {
	ctx, cancel := context.WithTimeout(context.Background(), e.timeout)
	defer cancel()
	dir, err := e.runDir("forward-")
	if err != nil {
		return res, err
	}
	defer e.cleanRunDir(dir, &err)
	edgeDir, centralDir := filepath.Join(dir, "edge"), filepath.Join(dir, "central")
	for _, d := range []string{edgeDir, centralDir} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return res, err
		}
	}
	ccfg, err := newAgentConfig(centralDir, sync, "http")
	if err != nil {
		return res, err
	}
	ecfg, err := newAgentConfig(edgeDir, sync, "tcp")
	if err != nil {
		return res, err
	}
	budget := 4*points*120 + 1<<30 // WAL bytes, generously: about 100 bytes a point
	ecfg.Storage = fmt.Sprintf("disk_budget: %d", budget)
	ecfg.Extra = fmt.Sprintf("outputs:\n  influx:\n    - {name: central, url: \"http://127.0.0.1:%d\", retry_min: 100ms, retry_max: 500ms, disk_budget: %d}\n",
		ccfg.HTTP, budget)

	edge, err := startAgent(e.bin, edgeDir, ecfg)
	if err != nil {
		return res, err
	}
	defer edge.kill()
	if _, err := edge.waitFor("/health", 2*time.Minute); err != nil {
		return res, err
	}
	gen, err := newLineGen(series)
	if err != nil {
		return res, err
	}
	l := load{gen: gen, points: points, workers: e.conns, batch: e.tcpBatch, pace: pacer{start: time.Now()}}
	if _, err := sendTCP(ctx, fmt.Sprintf("127.0.0.1:%d", ecfg.TCP), l); err != nil {
		return res, err
	}
	if _, _, err := waitPersisted(ctx, edge, uint64(points)); err != nil {
		return res, err
	}
	// Let the edge's own flusher settle, so that what is timed is forwarding.
	if err := edge.flush(ctx); err != nil {
		return res, err
	}
	before, err := edge.output(ctx, "central")
	if err != nil {
		return res, err
	}
	res.Backlog = before.LagBytes
	e.logf("  forward: the edge holds %d MiB (%d points) unsent; starting the central agent", res.Backlog>>20, points)

	edgeCPU0, _ := procCPU(edge.pid())
	central, err := startAgent(e.bin, centralDir, ccfg)
	if err != nil {
		return res, err
	}
	defer central.kill()
	for {
		o, err := edge.output(ctx, "central")
		if err != nil {
			return res, err
		}
		if o.LagRecords == 0 {
			res.Forward = time.Since(central.started)
			break
		}
		select {
		case <-ctx.Done():
			return res, fmt.Errorf("forwarding: %d records still unsent: %w", o.LagRecords, ctx.Err())
		case <-time.After(50 * time.Millisecond):
		}
	}
	edgeCPU1, _ := procCPU(edge.pid())
	if err := central.flush(ctx); err != nil {
		return res, err
	}
	res.InCentral = time.Since(central.started)
	res.CentralCPU, _ = procCPU(central.pid())
	res.EdgeCPU = edgeCPU1 - edgeCPU0
	_, res.EdgeRSS, _ = procMem(edge.pid())
	_, res.CentralRSS, _ = procMem(central.pid())
	if res.CentralRows, err = central.count(ctx, "SELECT count(*) FROM readings"); err != nil {
		return res, err
	}
	res.Points = points
	if res.CentralRows != points {
		return res, fmt.Errorf("the central agent holds %d rows, the edge acknowledged %d points", res.CentralRows, points)
	}
	if err := central.stop(5 * time.Minute); err != nil {
		return res, err
	}
	return res, edge.stop(5 * time.Minute)
}
