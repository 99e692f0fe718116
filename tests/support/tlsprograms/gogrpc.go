// A gRPC-over-TLS server and client (google.golang.org/grpc, Debian's
// golang-google-grpc-dev, built in GOPATH mode), for the eBPF TLS tests. The service is
// gRPC's own health service, so no .proto needs compiling.
//
//	gogrpc -mode server -addr 127.0.0.1:PORT -cert C -key K
//	gogrpc -mode client -addr 127.0.0.1:PORT -workers 4 -requests 5 -tag T
//
// The server knows the services named "T-wW-rR" for even R (SERVING); the others answer
// NotFound (grpc-status 5). The client runs -workers goroutines on one connection, each
// calling Check -requests times, checks every answer and prints "done N failures".
package main

import (
	"context"
	"crypto/tls"
	"flag"
	"fmt"
	"net"
	"os"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"
)

func serve(addr, cert, key, tag string, workers, requests int) {
	pair, err := tls.LoadX509KeyPair(cert, key)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	listener, err := net.Listen("tcp", addr)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	server := grpc.NewServer(grpc.Creds(credentials.NewTLS(&tls.Config{Certificates: []tls.Certificate{pair}})))
	checker := health.NewServer()
	for w := 0; w < workers; w++ {
		for r := 0; r < requests; r += 2 {
			checker.SetServingStatus(fmt.Sprintf("%s-w%d-r%d", tag, w, r), healthpb.HealthCheckResponse_SERVING)
		}
	}
	healthpb.RegisterHealthServer(server, checker)
	fmt.Println("listening")
	if err := server.Serve(listener); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}

func run(addr, tag string, workers, requests int) {
	creds := credentials.NewTLS(&tls.Config{InsecureSkipVerify: true})
	conn, err := grpc.Dial(addr, grpc.WithTransportCredentials(creds), grpc.WithBlock(),
		grpc.WithTimeout(20*time.Second))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	client := healthpb.NewHealthClient(conn)
	var wg sync.WaitGroup
	failures := make(chan error, workers*requests)
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			for r := 0; r < requests; r++ {
				name := fmt.Sprintf("%s-w%d-r%d", tag, w, r)
				ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
				resp, err := client.Check(ctx, &healthpb.HealthCheckRequest{Service: name})
				cancel()
				if r%2 == 0 && (err != nil || resp.Status != healthpb.HealthCheckResponse_SERVING) {
					failures <- fmt.Errorf("%s: %v %v", name, resp, err)
				}
				if r%2 == 1 && status.Code(err) != codes.NotFound {
					failures <- fmt.Errorf("%s: want NotFound, got %v", name, err)
				}
			}
		}(w)
	}
	wg.Wait()
	close(failures)
	count := 0
	for err := range failures {
		fmt.Fprintln(os.Stderr, err)
		count++
	}
	conn.Close()
	fmt.Printf("done %d failures\n", count)
}

func main() {
	mode := flag.String("mode", "server", "server or client")
	addr := flag.String("addr", "127.0.0.1:50051", "server: where to listen; client: where to call")
	cert := flag.String("cert", "", "server: certificate (PEM)")
	key := flag.String("key", "", "server: private key (PEM)")
	workers := flag.Int("workers", 4, "goroutines (the server registers their services)")
	requests := flag.Int("requests", 5, "calls per goroutine")
	tag := flag.String("tag", "t", "first part of the service names")
	flag.Parse()
	if *mode == "server" {
		serve(*addr, *cert, *key, *tag, *workers, *requests)
	} else {
		run(*addr, *tag, *workers, *requests)
	}
}
