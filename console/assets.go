package console

import (
	"embed"
	"io/fs"
	"net/http"
)

// The front end: console/web/src plus xterm.js from npm (pinned in
// console/web/package-lock.json), copied into console/web/dist by
// console/web/build.mjs. dist is committed, so a Go build needs no node.
//
//go:generate sh -c "cd web && npm ci --no-audit --no-fund && npm run build"

//go:embed web/dist
var dist embed.FS

func distFS() fs.FS {
	sub, err := fs.Sub(dist, "web/dist")
	if err != nil {
		panic(err) // the embed pattern guarantees the directory
	}
	return sub
}

// assetHandler serves /assets/* from dist (no directory listings).
func assetHandler() http.Handler {
	files := http.FileServerFS(distFS())
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/assets/" || r.URL.Path[len(r.URL.Path)-1] == '/' {
			http.NotFound(w, r)
			return
		}
		w.Header().Set("Cache-Control", "no-cache")
		files.ServeHTTP(w, r)
	})
}

// servePage is every page's HTML: the app routes on the path (/, /device,
// /pairing, /machines/{id}) and asks for a sign-in when there is none.
func (c *Console) servePage(w http.ResponseWriter, r *http.Request) {
	b, err := fs.ReadFile(distFS(), "assets/index.html")
	if err != nil {
		http.Error(w, "console assets missing: run go generate ./console", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	_, _ = w.Write(b)
}
