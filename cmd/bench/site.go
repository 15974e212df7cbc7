package main

import (
	"bytes"
	"fmt"
	"image"
	"image/png"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"time"
)

// itemCount is how many items the job page lists and a job reads.
const itemCount = 50

// jobQuery is what a job types into the page's input; the button writes it
// into every item, so the texts a job reads prove that fill and click ran.
const jobQuery = "gopher"

// The gallery page is the job page with galleryImages images below the
// items, each imageBytes of PNG served after imageDelay, the cost of a
// real server: what a scraper saves by blocking images.
const (
	galleryImages = 50
	imageDelay    = 5 * time.Millisecond
)

// benchSite is the local test site; it counts the images it serves.
type benchSite struct {
	*httptest.Server
	imageBytes int
	images     atomic.Int64
}

// newSite serves the page every job and every measured lease loads
// (/items): a title, an input, a button and itemCount list items. It is
// static, small and served from loopback, so the page itself costs the
// same on every path. /gallery is the same page with galleryImages images.
func newSite() *benchSite {
	var items strings.Builder
	for i := 1; i <= itemCount; i++ {
		fmt.Fprintf(&items, "<li class=item>item %d</li>\n", i)
	}
	page := func(extra string) string {
		return `<!doctype html>
<html><head><meta charset=utf-8><title>Bench items</title></head>
<body>
<h1>Items</h1>
<input id=q>
<button id=go onclick="document.querySelectorAll('li.item').forEach((li, i) => li.textContent = document.getElementById('q').value + ' ' + (i + 1))">Go</button>
<ul>
` + items.String() + `</ul>
` + extra + `</body></html>
`
	}
	var imgs strings.Builder
	for i := 1; i <= galleryImages; i++ {
		fmt.Fprintf(&imgs, "<img src=\"/img/%d.png\" width=32 height=32>\n", i)
	}
	itemsPage, galleryPage, picture := page(""), page(imgs.String()), noisePNG()
	s := &benchSite{imageBytes: len(picture)}
	html := func(body string) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "text/html; charset=utf-8")
			w.Header().Set("Cache-Control", "no-store")
			fmt.Fprint(w, body)
		}
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/items", html(itemsPage))
	mux.HandleFunc("/gallery", html(galleryPage))
	mux.HandleFunc("/img/", func(w http.ResponseWriter, r *http.Request) {
		s.images.Add(1)
		time.Sleep(imageDelay)
		w.Header().Set("Content-Type", "image/png")
		w.Header().Set("Cache-Control", "no-store")
		_, _ = w.Write(picture)
	})
	s.Server = httptest.NewServer(mux)
	return s
}

// noisePNG is a 32x32 PNG of noise: about 4 KiB that do not compress.
func noisePNG() []byte {
	img := image.NewNRGBA(image.Rect(0, 0, 32, 32))
	rnd := rand.New(rand.NewPCG(1, 2))
	for i := range img.Pix {
		img.Pix[i] = byte(rnd.UintN(256))
	}
	var b bytes.Buffer
	if err := png.Encode(&b, img); err != nil {
		panic(err) // an in-memory encode of a valid image
	}
	return b.Bytes()
}

// checkTexts verifies what a job read: itemCount texts, rewritten by the
// click.
func checkTexts(texts []string) error {
	if len(texts) != itemCount {
		return fmt.Errorf("read %d item texts, want %d", len(texts), itemCount)
	}
	if want := fmt.Sprintf("%s %d", jobQuery, itemCount); texts[itemCount-1] != want {
		return fmt.Errorf("last item text %q, want %q (fill or click had no effect)", texts[itemCount-1], want)
	}
	return nil
}
