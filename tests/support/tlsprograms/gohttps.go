// An HTTPS server and client on Go's crypto/tls and net/http, for the eBPF TLS tests.
//
//	gohttps -mode server -addr 127.0.0.1:PORT -cert C -key K [-wrap none|embed|field]
//	gohttps -mode client -url https://127.0.0.1:PORT -proto h1|h2 -workers 8 -requests 6 -tag T
//	        [-seconds S]
//
// The server answers every request with status ?status=N (default 200) and the body
// "PROTO METHOD PATH body=REQUEST-BODY". The client runs -workers goroutines on one
// http.Client (keep-alive: h1 keeps one connection per goroutine, h2 multiplexes them on
// one), each making -requests requests to /TAG/wW/rR: GET, POST with a body every second
// request, ?status=404 every third. It checks every status and body and prints
// "done N failures". With -seconds, each goroutine repeats its requests until S seconds have
// passed, and the client prints "requests N" (how many were made) before that line.
//
// -wrap puts the server's TCP connections in a wrapper before TLS sees them, as proxies and
// connection multiplexers do: "embed" a struct whose first field is the net.Conn
// (cmux.MuxConn's shape), "field" a struct that holds it after another field, "deep" one
// that holds it behind a pointer.
package main

import (
	"bytes"
	"crypto/tls"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// embeddedConn has the net.Conn as its first field.
type embeddedConn struct {
	net.Conn
	reads int64
}

func (c *embeddedConn) Read(b []byte) (int, error) {
	atomic.AddInt64(&c.reads, 1)
	return c.Conn.Read(b)
}

// fieldConn holds the net.Conn after another field.
type fieldConn struct {
	bytes int64
	inner net.Conn
}

func (c *fieldConn) Read(b []byte) (int, error) {
	n, err := c.inner.Read(b)
	atomic.AddInt64(&c.bytes, int64(n))
	return n, err
}
func (c *fieldConn) Write(b []byte) (int, error)        { return c.inner.Write(b) }
func (c *fieldConn) Close() error                       { return c.inner.Close() }
func (c *fieldConn) LocalAddr() net.Addr                { return c.inner.LocalAddr() }
func (c *fieldConn) RemoteAddr() net.Addr               { return c.inner.RemoteAddr() }
func (c *fieldConn) SetDeadline(t time.Time) error      { return c.inner.SetDeadline(t) }
func (c *fieldConn) SetReadDeadline(t time.Time) error  { return c.inner.SetReadDeadline(t) }
func (c *fieldConn) SetWriteDeadline(t time.Time) error { return c.inner.SetWriteDeadline(t) }

// deepConn reaches the net.Conn through a pointer.
type deepConn struct {
	state *fieldConn
}

func (c *deepConn) Read(b []byte) (int, error)        { return c.state.Read(b) }
func (c *deepConn) Write(b []byte) (int, error)       { return c.state.Write(b) }
func (c *deepConn) Close() error                      { return c.state.Close() }
func (c *deepConn) LocalAddr() net.Addr               { return c.state.LocalAddr() }
func (c *deepConn) RemoteAddr() net.Addr              { return c.state.RemoteAddr() }
func (c *deepConn) SetDeadline(t time.Time) error     { return c.state.SetDeadline(t) }
func (c *deepConn) SetReadDeadline(t time.Time) error { return c.state.SetReadDeadline(t) }
func (c *deepConn) SetWriteDeadline(t time.Time) error {
	return c.state.SetWriteDeadline(t)
}

type wrappingListener struct {
	net.Listener
	wrap string
}

func (l wrappingListener) Accept() (net.Conn, error) {
	conn, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	switch l.wrap {
	case "embed":
		return &embeddedConn{Conn: conn}, nil
	case "deep":
		return &deepConn{state: &fieldConn{inner: conn}}, nil
	}
	return &fieldConn{inner: conn}, nil
}

func serve(addr, cert, key, wrap string) {
	handler := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		status := 200
		if s := r.URL.Query().Get("status"); s != "" {
			status, _ = strconv.Atoi(s)
		}
		w.Header().Set("Content-Type", "text/plain")
		w.WriteHeader(status)
		fmt.Fprintf(w, "%s %s %s body=%s", r.Proto, r.Method, r.URL.Path, body)
	})
	server := &http.Server{Addr: addr, Handler: handler}
	var err error
	if wrap == "none" {
		fmt.Println("listening")
		err = server.ListenAndServeTLS(cert, key)
	} else {
		var listener net.Listener
		listener, err = net.Listen("tcp", addr)
		if err == nil {
			fmt.Println("listening")
			err = server.ServeTLS(wrappingListener{listener, wrap}, cert, key)
		}
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}

func request(client *http.Client, url, tag string, w, r int) error {
	path := fmt.Sprintf("/%s/w%d/r%d", tag, w, r)
	method, body, status := "GET", "", 200
	if r%2 == 1 {
		method, body = "POST", fmt.Sprintf("payload-%d-%d", w, r)
	}
	if r%3 == 2 {
		status = 404
	}
	req, err := http.NewRequest(method, fmt.Sprintf("%s%s?status=%d", url, path, status),
		bytes.NewBufferString(body))
	if err != nil {
		return err
	}
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	got, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		return err
	}
	want := fmt.Sprintf("%s %s %s body=%s", resp.Proto, method, path, body)
	if resp.StatusCode != status || string(got) != want {
		return fmt.Errorf("%s: got %d %q, want %d %q", path, resp.StatusCode, got, status, want)
	}
	return nil
}

func run(url, proto string, workers, requests int, tag string, seconds float64) {
	transport := &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true},
		MaxIdleConnsPerHost: workers}
	if proto == "h2" {
		transport.ForceAttemptHTTP2 = true
	} else {
		transport.TLSNextProto = map[string]func(string, *tls.Conn) http.RoundTripper{}
	}
	client := &http.Client{Transport: transport}
	var wg sync.WaitGroup
	var made int64
	deadline := time.Now().Add(time.Duration(seconds * float64(time.Second)))
	failures := make(chan error, workers*requests)
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			for r := 0; r < requests || (seconds > 0 && time.Now().Before(deadline)); r++ {
				if err := request(client, url, tag, w, r%requests); err != nil {
					select {
					case failures <- err:
					default: // enough to report
					}
				}
				atomic.AddInt64(&made, 1)
			}
		}(w)
	}
	wg.Wait()
	close(failures)
	if seconds > 0 {
		fmt.Printf("requests %d\n", made)
	}
	count := 0
	for err := range failures {
		fmt.Fprintln(os.Stderr, err)
		count++
	}
	transport.CloseIdleConnections()
	fmt.Printf("done %d failures\n", count)
}

func main() {
	mode := flag.String("mode", "server", "server or client")
	addr := flag.String("addr", "127.0.0.1:8443", "server: where to listen")
	cert := flag.String("cert", "", "server: certificate (PEM)")
	key := flag.String("key", "", "server: private key (PEM)")
	url := flag.String("url", "", "client: https://HOST:PORT")
	proto := flag.String("proto", "h1", "client: h1 or h2")
	workers := flag.Int("workers", 4, "client: goroutines")
	requests := flag.Int("requests", 3, "client: requests per goroutine")
	tag := flag.String("tag", "t", "client: first path segment")
	wrap := flag.String("wrap", "none", "server: none, embed, field or deep")
	seconds := flag.Float64("seconds", 0, "client: repeat the requests for this long")
	flag.Parse()
	if *mode == "server" {
		serve(*addr, *cert, *key, *wrap)
	} else {
		run(*url, *proto, *workers, *requests, *tag, *seconds)
	}
}
