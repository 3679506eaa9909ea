package report

import (
	_ "embed"
	"fmt"
	"html/template"
	"io"
	"math"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/inspectproxy/inspectproxy/timing"
)

//go:embed report.html.tmpl
var htmlTemplate string

var htmlPage = template.Must(template.New("report").Funcs(template.FuncMap{
	"ms": fmtMS,
	"percentiles": func(s Stats) []*float64 {
		return []*float64{s.P50, s.P95, s.P99, s.Max}
	},
	"f":   func(v float64) string { return strconv.FormatFloat(v, 'f', 1, 64) },
	"utc": func(t time.Time) string { return t.UTC().Format(time.RFC3339) },
}).Parse(htmlTemplate))

// Geometry of the SVG charts, in the template's viewBox units: 1000 wide.
const (
	plotLeft   = 270.0 // room for row labels
	plotRight  = 975.0
	axisTop    = 28.0 // room for tick labels
	labelRunes = 38
)

// barPhases are the host bars' stacked phases and the Host.Phases index of
// each; total is no phase of the stack.
var barPhases = []struct {
	class, label string
	index        int
}{
	{"ph-dns", "DNS", iDNS},
	{"ph-connect", "TCP connect", iConnect},
	{"ph-tls", "TLS handshake", iTLS},
	{"ph-wait", "TTFB (wait)", iTTFB},
	{"ph-receive", "receive", iReceive},
}

// legendItem is one colour of the legend.
type legendItem struct{ Class, Label string }

// legend lists every colour the charts use; the waterfall adds blocked, send
// and half-close to the bars' phases.
var legend = []legendItem{
	{"ph-blocked", "blocked (waiting for a connection)"},
	{"ph-dns", "DNS"},
	{"ph-connect", "TCP connect"},
	{"ph-tls", "TLS handshake"},
	{"ph-send", "send"},
	{"ph-wait", "TTFB (wait)"},
	{"ph-receive", "receive"},
	{"ph-half-close", "half-close (first FIN to second FIN)"},
}

// spanClass maps a waterfall span's phase to its colour.
var spanClass = map[string]string{
	spanBlocked:   "ph-blocked",
	PhaseDNS:      "ph-dns",
	PhaseConnect:  "ph-connect",
	PhaseTLS:      "ph-tls",
	spanSend:      "ph-send",
	spanWait:      "ph-wait",
	PhaseReceive:  "ph-receive",
	spanHalfClose: "ph-half-close",
}

type htmlView struct {
	Summary        string
	Notes          []string
	LatencyLegend  string
	CloseLegend    string
	FailuresLegend string
	Legend         []legendItem
	Hosts          []Host
	Failures       []Failure
	Charts         []chart
}

// chart is an SVG chart laid out in Go, so the page needs no script.
type chart struct {
	ID, Title, Caption string
	Height             float64
	Break              float64 // x of an axis break, 0 if none
	Ticks              []tick
	Rows               []row
}

type tick struct {
	X     float64
	Label string
}

type row struct {
	Label, Tip string
	Y          float64 // label baseline
	Line       *line   // the connection's life
	Rects      []rect
	Notes      []note
}

type line struct{ X1, X2, Y float64 }

type rect struct {
	X, Y, W, H float64
	Class, Tip string
}

type note struct {
	X, Y       float64
	Class      string
	Text, Tip  string
	AnchorsEnd bool
}

func (r *Report) writeHTML(w io.Writer) error {
	v := htmlView{
		Summary:        r.summary(),
		Notes:          r.notes(),
		Failures:       r.Failures,
		LatencyLegend:  latencyLegend,
		CloseLegend:    closeLegend,
		FailuresLegend: failuresLegend,
		Legend:         legend,
		Hosts:          r.Hosts,
		Charts:         []chart{r.hostChart()},
	}
	if len(r.first) > 0 {
		v.Charts = append(v.Charts, firstChart(r.first))
	}
	if len(r.slowest) > 0 {
		v.Charts = append(v.Charts, slowestChart(r.slowest))
	}
	return htmlPage.Execute(w, v)
}

// hostChart stacks each host's p50 phases in one bar and p95 in a thinner
// one below it. Stacked percentiles are not the percentile of the sums; the
// bars compare where hosts spend their time.
func (r *Report) hostChart() chart {
	const rowH, p50H, p95H = 46.0, 16.0, 9.0
	c := chart{
		ID:    "hosts",
		Title: "Phases per host",
		Caption: "Each host's p50 of each phase stacked (thick bar) and p95 (thin bar). " +
			"Hover a segment for its value and sample count.",
	}
	type bar struct {
		name     string
		segments []rect // X and W in ms until scaled
		total    float64
	}
	bars := make([][2]bar, len(r.Hosts))
	maxMS := 0.0
	for i := range r.Hosts {
		h := &r.Hosts[i]
		for j, pick := range []func(Stats) *float64{
			func(s Stats) *float64 { return s.P50 },
			func(s Stats) *float64 { return s.P95 },
		} {
			b := &bars[i][j]
			b.name = [...]string{"p50", "p95"}[j]
			for _, p := range barPhases {
				s := h.Phases[p.index].Stats
				if v := pick(s); v != nil && *v > 0 {
					b.segments = append(b.segments, rect{X: b.total, W: *v, Class: p.class,
						Tip: fmt.Sprintf("%s %s %s: %s ms (n=%d)", h.Name, p.label, b.name, fmtMS(v), s.N)})
					b.total += *v
				}
			}
			maxMS = max(maxMS, b.total)
		}
	}
	// The extra 15% leaves room for the value after the longest bar.
	ax := newAxis(maxMS*1.15, 0)
	c.Ticks = ax.ticks
	y := axisTop + 8
	for i := range r.Hosts {
		h := &r.Hosts[i]
		rw := row{
			Label: shorten(h.Name),
			Tip:   fmt.Sprintf("%s: %d connections, %d requests", h.Name, h.Connections, h.Requests),
			Y:     y + p50H - 3,
		}
		for j, b := range bars[i] {
			top, height := y, p50H
			if j == 1 {
				top, height = y+p50H+3, p95H
			}
			for _, sg := range b.segments {
				sg.X, sg.W, sg.Y, sg.H = ax.x(sg.X), ax.x(sg.X+sg.W)-ax.x(sg.X), top, height
				rw.Rects = append(rw.Rects, sg)
			}
			rw.Notes = append(rw.Notes, note{
				X: ax.x(b.total) + 4, Y: top + height - 2, Class: "value",
				Text: fmt.Sprintf("%s %s ms", b.name, strconv.FormatFloat(b.total, 'f', 1, 64)),
			})
		}
		c.Rows = append(c.Rows, rw)
		y += rowH
	}
	c.Height = y
	return c
}

// firstChart draws the earliest connections, in start order, each on its
// own time line from its own accept, on one scale: one time line from the
// first accept would spend the width on the idle time between connections
// (on a 3-minute capture every row became a 1-pixel sliver). Each row's
// label says when it started after the first.
func firstChart(conns []conn) chart {
	t0 := conns[0].start
	return waterfallChart("first", fmt.Sprintf("Waterfall: the first %d connections", len(conns)),
		"Connections in start order, each from its own accept on one shared scale; +time is its accept after the first one's.",
		conns, func(c *conn) string { return "+" + fmtOffset(timing.MS(c.start.Sub(t0))) })
}

// fmtOffset is a start offset for a row label: ms under a second, else s.
func fmtOffset(ms float64) string {
	if ms < 1000 {
		return strconv.FormatFloat(ms, 'f', 0, 64) + " ms"
	}
	return strconv.FormatFloat(ms/1000, 'f', 1, 64) + " s"
}

// slowestChart aligns the slowest successful connections at their own accept.
func slowestChart(conns []conn) chart {
	return waterfallChart("slowest", fmt.Sprintf("Waterfall: the %d slowest connections", len(conns)),
		"Successful connections by time from accept to the first response byte (curl's time_starttransfer); "+
			"for passthrough tunnels, where the proxy sees no HTTP, to the TLS handshake done. Slowest first, each from "+
			"its own accept. Failures never rank here: they are in the failures table.",
		conns, nil)
}

// waterfallCaption follows each waterfall's own caption.
const waterfallCaption = " The grey line is the client connection's life. Past the break (≈) the axis is compressed, " +
	"so that whole lives and closes fit. RST marks who reset, at the row's end: when is not recorded; ✕ marks a failure and its class."

// waterfallChart draws conns, each from its own accept; label, if set,
// adds to each row's label. The axis is linear up to the latest first byte
// (or setup end) and, when lives run far past it, broken there and
// compressed after.
func waterfallChart(id, title, caption string, conns []conn, label func(*conn) string) chart {
	const rowH, barH = 24.0, 12.0
	focus, end := 0.0, 0.0
	for i := range conns {
		c := &conns[i]
		focus = max(focus, c.focusMS)
		end = max(end, c.endMS)
		for _, s := range c.spans {
			end = max(end, s.to)
		}
	}
	ax := newAxis(focus, end)
	x := func(v float64) float64 { return ax.x(max(v, 0)) }
	ch := chart{ID: id, Title: title, Caption: caption + waterfallCaption, Ticks: ax.ticks, Break: ax.brk}
	y := axisTop + 6
	for i := range conns {
		cn := &conns[i]
		mid := y + rowH/2
		text := cn.host + " · " + cn.kind
		if label != nil {
			text = label(cn) + " " + text
		}
		rw := row{
			Label: shorten(text),
			Tip: fmt.Sprintf("%s %s (%s), accepted %s, open %s ms", cn.id, cn.host, cn.kind,
				cn.start.UTC().Format(time.RFC3339Nano), strconv.FormatFloat(cn.endMS, 'f', 1, 64)),
			Y:    mid + 4,
			Line: &line{X1: x(0), X2: x(cn.endMS), Y: mid},
		}
		for _, s := range cn.spans {
			from, to := x(s.from), x(s.to)
			rw.Rects = append(rw.Rects, rect{
				X: from, Y: mid - barH/2, W: max(to-from, 1.5), H: barH, Class: spanClass[s.phase],
				Tip: fmt.Sprintf("%s: %s %s ms (%s to %s ms after accept)", s.note, s.phase,
					strconv.FormatFloat(s.to-s.from, 'f', 1, 64),
					strconv.FormatFloat(s.from, 'f', 1, 64), strconv.FormatFloat(s.to, 'f', 1, 64)),
			})
		}
		var marks []string
		if len(cn.resets) > 0 {
			marks = append(marks, "RST")
		}
		if cn.dropped > 0 {
			marks = append(marks, fmt.Sprintf("+%d more", cn.dropped))
		}
		switch {
		case cn.failed != "":
			// Right after what was drawn, so that the row is never empty.
			at := 0.0
			for _, s := range cn.spans {
				at = max(at, s.to)
			}
			rw.Notes = append(rw.Notes, note{X: x(at) + 3, Y: mid + 4, Class: "fail",
				Text: strings.Join(append([]string{"✕ " + cn.failed}, marks...), " "),
				Tip:  strings.Join(append([]string{cn.failDetail}, cn.resets...), "; ")})
		case len(marks) > 0:
			n := note{X: x(cn.endMS) + 3, Y: mid + 4, Class: "rst", Text: strings.Join(marks, " "),
				Tip: strings.Join(cn.resets, "; ")}
			if n.X > plotRight-40 {
				// No room after the row's end: right-aligned above the bar.
				n.X, n.Y, n.AnchorsEnd = plotRight, mid-barH/2-1, true
			}
			rw.Notes = append(rw.Notes, n)
		}
		ch.Rows = append(ch.Rows, rw)
		y += rowH
	}
	ch.Height = y + 6
	if ax.brk != 0 {
		ch.Height += 12 // room for the break's ≈ under the rows
	}
	return ch
}

// axis maps milliseconds to the plot's x. Up to focusEnd (focus rounded up
// to a tick) it is linear; when the data runs far past that, the axis breaks
// at brk and compresses the rest up to end.
type axis struct {
	focusEnd, end float64
	brk           float64 // x of the break; 0 if unbroken
	ticks         []tick
}

// Broken axes give the focus this share of the plot, and the break this gap.
const (
	focusShare = 0.75
	breakGap   = 14.0
	minTickGap = 60.0 // pixels between the break and the next tick
)

func newAxis(focus, end float64) *axis {
	if focus <= 0 {
		focus = max(end, 1)
	}
	step := niceStep(focus / 6)
	a := &axis{focusEnd: math.Ceil(focus/step) * step}
	if end <= a.focusEnd*1.5 {
		// Close enough: one linear axis to the end.
		step = niceStep(max(end, focus) / 6)
		a.focusEnd = math.Ceil(max(end, focus)/step) * step
		a.end = a.focusEnd
		a.addTicks(0, a.focusEnd, step, 0)
		return a
	}
	a.brk = plotLeft + focusShare*(plotRight-plotLeft)
	rest := niceStep((end - a.focusEnd) / 3)
	a.end = math.Ceil(end/rest) * rest
	a.addTicks(0, a.focusEnd, step, 0)
	a.addTicks(a.focusEnd+rest-math.Mod(a.focusEnd, rest), a.end, rest, a.brk+breakGap+minTickGap)
	return a
}

// addTicks adds ticks from..to every step whose x is at least minX.
func (a *axis) addTicks(from, to, step, minX float64) {
	// Enough decimals for the step, none for steps of 1 and up.
	decimals := max(0, -int(math.Floor(math.Log10(step))))
	for i := 0; ; i++ {
		v := from + float64(i)*step
		if v > to+step/2 {
			return
		}
		if a.x(v) < minX {
			continue
		}
		label := strconv.FormatFloat(v, 'f', decimals, 64) + " ms"
		if step >= 1000 {
			label = strconv.FormatFloat(v/1000, 'f', 0, 64) + " s"
		}
		a.ticks = append(a.ticks, tick{X: a.x(v), Label: label})
	}
}

func (a *axis) x(v float64) float64 {
	if a.brk == 0 {
		return plotLeft + min(v, a.end)/a.end*(plotRight-plotLeft)
	}
	if v <= a.focusEnd {
		return plotLeft + v/a.focusEnd*(a.brk-plotLeft)
	}
	right := a.brk + breakGap
	return right + (min(v, a.end)-a.focusEnd)/(a.end-a.focusEnd)*(plotRight-right)
}

// niceStep rounds raw up to 1, 2 or 5 times a power of ten.
func niceStep(raw float64) float64 {
	mag := math.Pow(10, math.Floor(math.Log10(raw)))
	for _, m := range []float64{1, 2, 5} {
		if m*mag >= raw {
			return m * mag
		}
	}
	return 10 * mag
}

// shorten cuts a label to what fits left of the plot; the tooltip has it whole.
func shorten(s string) string {
	if utf8.RuneCountInString(s) <= labelRunes {
		return s
	}
	return string([]rune(s)[:labelRunes-1]) + "…"
}
