package console

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/inspectproxy/inspectproxy/event"
	"github.com/inspectproxy/inspectproxy/internal/chromium"
	"github.com/inspectproxy/inspectproxy/live"
)

// TestBrowserLoad fills the console with 10,000 rows of history and
// publishes 1,000 connections/s (six phases each) for five seconds while
// Chromium shows it. It checks that the page keeps its row bound and logs
// no error, and logs the frame intervals and the time spent applying
// batches and drawing, for whoever tunes it (no wall-clock assertion: the
// machine may be loaded).
func TestBrowserLoad(t *testing.T) {
	hub := live.NewHub(live.Options{Encode: Encode, Interval: 100 * time.Millisecond, History: 10000})
	evs := sample(t)
	var hist []*event.Event
	for i := 0; len(hist) < 10000; i++ {
		e := *evs[i%len(evs)]
		e.ID = fmt.Sprintf("h%d", i)
		hist = append(hist, &e)
	}
	hub.Preload(hist)
	r := start(t, Options{Hub: hub})
	b := chromium.New(t, nil)
	b.Do(60*time.Second, chromedp.Navigate("http://"+r.addr+"/"), chromedp.WaitVisible(chromedp.CSS(".row")))
	t.Logf("rows after reset: %d", chromium.Eval[int](b, "rows.size"))
	b.Do(10*time.Second, chromedp.Evaluate[chromedp.Void](`window.gaps=[]; window.last=performance.now(); window.tA=[]; window.tR=[]; const oa=applyRows; window.applyRows=function(m){const s=performance.now(); oa(m); tA.push(performance.now()-s)}; const orr=render; window.render=function(){const s=performance.now(); orr(); tR.push(performance.now()-s)}; (function f(){ const n=performance.now(); gaps.push(n-last); last=n; requestAnimationFrame(f); })()`))
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	tmpl := *find(t, evs, "c0020")
	n := 0
	tick := time.NewTicker(10 * time.Millisecond)
	start := time.Now()
loop:
	for {
		select {
		case <-ctx.Done():
			break loop
		case <-tick.C:
			for range 10 { // 1000/s
				e := tmpl
				e.ID = fmt.Sprintf("l%d", n)
				e.Start = time.Now()
				n++
				for _, p := range []live.Phase{live.Accepted, live.Connected, live.ClientHello, live.ServerHello, live.HandshakeDone} {
					s := e
					s.End = time.Time{}
					hub.Publish(p, &s)
				}
				c := e
				c.End = time.Now()
				hub.Publish(live.Closed, &c)
			}
		}
	}
	el := time.Since(start)
	time.Sleep(300 * time.Millisecond)
	res := chromium.Eval[[]float64](b, `(() => { const g = gaps.slice(1).sort((a,b)=>a-b); return [g.length, g[Math.floor(g.length*0.5)], g[Math.floor(g.length*0.95)], g[g.length-1]]; })()`)
	t.Logf("applyRows ms %v render ms %v", chromium.Eval[[]float64](b, `(() => { const g = tA.slice().sort((a,b)=>a-b); return [g.length, g[Math.floor(g.length*0.5)], g[g.length-1]]; })()`), chromium.Eval[[]float64](b, `(() => { const g = tR.slice().sort((a,b)=>a-b); return [g.length, g[Math.floor(g.length*0.5)], g[g.length-1]]; })()`))
	shown := chromium.Eval[int](b, "rows.size")
	t.Logf("published %d connections in %v (%.0f/s); frames %v (count, p50 ms, p95 ms, max ms); rows %d; hub %+v", n, el, float64(n)/el.Seconds(), res, shown, hub.Stats())
	if shown > 10000+500+50 || shown < 10000 {
		t.Errorf("%d rows shown, want the history bound (10,000, trimmed past 5%% more)", shown)
	}
	if errs := b.Errors(); len(errs) > 0 {
		t.Errorf("the page logged errors:\n%s", strings.Join(errs, "\n"))
	}
}
