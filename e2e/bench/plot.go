package main

import (
	"fmt"
	"html"
	"io"
	"math"
	"strings"
)

// panel is one chart of the plot: a run's samples over time.
type panel struct {
	Title   string
	Samples []sample
	Rates   bool // plot ingest and DuckDB rates (false: RSS only, for recovery)
}

// Plot geometry, in SVG user units.
const (
	panelW, panelH = 540, 250
	padL, padR     = 70, 80
	padT, padB     = 30, 40
	columns        = 2
)

// rateWindow is the span, in seconds, each plotted rate is averaged over.
const rateWindow = 1.0

// Series colours.
const (
	colIngest = "#1f77b4"
	colDuckDB = "#ff7f0e"
	colRSS    = "#555555"
)

// writeSVG draws each panel's acknowledged and flushed points/s (left axis,
// averaged over the last second) and the agent's RSS (right axis) over the
// seconds of the run.
func writeSVG(w io.Writer, title string, panels []panel) error {
	rows := (len(panels) + columns - 1) / columns
	width, height := columns*panelW, rows*panelH+60
	var b strings.Builder
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" viewBox="0 0 %d %d" font-family="sans-serif" font-size="11">`+"\n",
		width, height, width, height)
	fmt.Fprintf(&b, `<rect width="100%%" height="100%%" fill="white"/>`+"\n")
	fmt.Fprintf(&b, `<text x="%d" y="20" font-size="15" font-weight="bold">%s</text>`+"\n", 10, html.EscapeString(title))
	legendY := 40
	legend := []struct{ col, label, dash string }{
		{colIngest, "acknowledged points/s (1 s average)", ""},
		{colDuckDB, "points/s into DuckDB (1 s average)", ""},
		{colRSS, "agent RSS MiB (right axis)", "4 3"},
	}
	for i, l := range legend {
		x := 10 + i*300
		fmt.Fprintf(&b, `<line x1="%d" y1="%d" x2="%d" y2="%d" stroke="%s" stroke-width="2" stroke-dasharray="%s"/>`, x, legendY-4, x+24, legendY-4, l.col, l.dash)
		fmt.Fprintf(&b, `<text x="%d" y="%d">%s</text>`+"\n", x+30, legendY, l.label)
	}
	for i, p := range panels {
		x0 := (i % columns) * panelW
		y0 := 60 + (i/columns)*panelH
		drawPanel(&b, x0, y0, p)
	}
	b.WriteString("</svg>\n")
	_, err := io.WriteString(w, b.String())
	return err
}

func drawPanel(b *strings.Builder, x0, y0 int, p panel) {
	plotW := float64(panelW - padL - padR)
	plotH := float64(panelH - padT - padB)
	left, top := float64(x0+padL), float64(y0+padT)
	fmt.Fprintf(b, `<text x="%d" y="%d" font-size="12" font-weight="bold">%s</text>`+"\n", x0+padL, y0+18, html.EscapeString(p.Title))
	fmt.Fprintf(b, `<rect x="%.1f" y="%.1f" width="%.1f" height="%.1f" fill="none" stroke="#999"/>`+"\n", left, top, plotW, plotH)
	if len(p.Samples) < 2 {
		fmt.Fprintf(b, `<text x="%.1f" y="%.1f">too few samples</text>`+"\n", left+10, top+20)
		return
	}
	tMax := niceCeil(p.Samples[len(p.Samples)-1].T)
	var ingest, flushed [][2]float64
	var rateMax, rssMax float64
	j := 0
	for i, s := range p.Samples {
		rssMax = max(rssMax, float64(s.RSS)/(1<<20))
		if i == 0 || !p.Rates {
			continue
		}
		// Rates over the last rateWindow seconds: the flusher works in
		// batches and samples arrive unevenly, so shorter windows are spikes.
		for j+1 < i && s.T-p.Samples[j+1].T >= rateWindow {
			j++
		}
		prev := p.Samples[j]
		dt := s.T - prev.T
		if dt <= 0 {
			continue
		}
		mid := s.T
		ri := float64(s.Persisted-min(prev.Persisted, s.Persisted)) / dt
		rf := float64(s.Flushed-min(prev.Flushed, s.Flushed)) / dt
		ingest = append(ingest, [2]float64{mid, ri})
		flushed = append(flushed, [2]float64{mid, rf})
		rateMax = max(rateMax, ri, rf)
	}
	rateMax, rssMax = niceCeil(rateMax), niceCeil(rssMax)
	sx := func(t float64) float64 { return left + t/tMax*plotW }
	sy := func(v, vmax float64) float64 { return top + plotH - v/vmax*plotH }

	// Grid and axes: five steps each.
	for k := 0; k <= 5; k++ {
		f := float64(k) / 5
		y := top + plotH - f*plotH
		fmt.Fprintf(b, `<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="#eee"/>`, left, y, left+plotW, y)
		if p.Rates {
			fmt.Fprintf(b, `<text x="%.1f" y="%.1f" text-anchor="end">%s</text>`, left-4, y+4, shortNum(f*rateMax))
		}
		fmt.Fprintf(b, `<text x="%.1f" y="%.1f">%s</text>`, left+plotW+4, y+4, shortNum(f*rssMax))
		x := left + f*plotW
		fmt.Fprintf(b, `<text x="%.1f" y="%.1f" text-anchor="middle">%s</text>`+"\n", x, top+plotH+14, shortNum(f*tMax))
	}
	fmt.Fprintf(b, `<text x="%.1f" y="%.1f" text-anchor="middle">seconds</text>`+"\n", left+plotW/2, top+plotH+30)
	if p.Rates {
		fmt.Fprintf(b, `<text transform="translate(%.1f %.1f) rotate(-90)" text-anchor="middle">points/s</text>`+"\n", float64(x0+14), top+plotH/2)
	}
	fmt.Fprintf(b, `<text transform="translate(%.1f %.1f) rotate(90)" text-anchor="middle">RSS MiB</text>`+"\n", float64(x0+panelW-padR+44), top+plotH/2)

	line := func(pts [][2]float64, vmax float64, col, dash string) {
		if len(pts) == 0 || vmax <= 0 {
			return
		}
		var d strings.Builder
		for i, pt := range pts {
			cmd := "L"
			if i == 0 {
				cmd = "M"
			}
			fmt.Fprintf(&d, "%s%.1f,%.1f ", cmd, sx(pt[0]), sy(pt[1], vmax))
		}
		fmt.Fprintf(b, `<path d="%s" fill="none" stroke="%s" stroke-width="1.8" stroke-dasharray="%s"/>`+"\n", strings.TrimSpace(d.String()), col, dash)
	}
	var rss [][2]float64
	for _, s := range p.Samples {
		rss = append(rss, [2]float64{s.T, float64(s.RSS) / (1 << 20)})
	}
	line(ingest, rateMax, colIngest, "")
	line(flushed, rateMax, colDuckDB, "")
	line(rss, rssMax, colRSS, "4 3")
}

// niceCeil rounds v up to 1, 2 or 5 times a power of ten.
func niceCeil(v float64) float64 {
	if v <= 0 || math.IsNaN(v) || math.IsInf(v, 0) {
		return 1
	}
	p := math.Pow(10, math.Floor(math.Log10(v)))
	for _, m := range []float64{1, 2, 5, 10} {
		if v <= m*p*(1+1e-9) {
			return m * p
		}
	}
	return 10 * p
}

// shortNum writes an axis label: 1.5M, 200k, 12, 0.5.
func shortNum(v float64) string {
	switch {
	case v >= 1e6:
		return trimZero(fmt.Sprintf("%.2f", v/1e6)) + "M"
	case v >= 1e3:
		return trimZero(fmt.Sprintf("%.1f", v/1e3)) + "k"
	case v == math.Trunc(v):
		return fmt.Sprintf("%.0f", v)
	}
	return trimZero(fmt.Sprintf("%.2f", v))
}

func trimZero(s string) string {
	if strings.Contains(s, ".") {
		s = strings.TrimRight(strings.TrimRight(s, "0"), ".")
	}
	return s
}
