package main

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
)

// itemCount is how many items the job page lists and a job reads.
const itemCount = 50

// jobQuery is what a job types into the page's input; the button writes it
// into every item, so the texts a job reads prove that fill and click ran.
const jobQuery = "gopher"

// newSite serves the page every job and every measured lease loads: a
// title, an input, a button and itemCount list items. It is static, small
// and served from loopback, so the page itself costs the same on every
// path.
func newSite() *httptest.Server {
	var items strings.Builder
	for i := 1; i <= itemCount; i++ {
		fmt.Fprintf(&items, "<li class=item>item %d</li>\n", i)
	}
	page := `<!doctype html>
<html><head><meta charset=utf-8><title>Bench items</title></head>
<body>
<h1>Items</h1>
<input id=q>
<button id=go onclick="document.querySelectorAll('li.item').forEach((li, i) => li.textContent = document.getElementById('q').value + ' ' + (i + 1))">Go</button>
<ul>
` + items.String() + `</ul>
</body></html>
`
	mux := http.NewServeMux()
	mux.HandleFunc("/items", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		w.Header().Set("Cache-Control", "no-store")
		fmt.Fprint(w, page)
	})
	return httptest.NewServer(mux)
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
