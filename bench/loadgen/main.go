// loadgen: a small mTLS load generator for KES-style servers (kesd, KES, the bare-Node floor).
//
// HTTP/1.1 uses a hand-rolled client over one tls.Conn per connection: exactly -conns keep-alive connections,
// one request in flight on each (HTTP/1.1 has no multiplexing), no per-request allocation beyond the response
// buffer. h2 uses net/http with one Transport per connection (MaxConnsPerHost 1) and -inflight streams on it.
// Every dial is counted, so the report states how many connections were really used.
//
// Output: one JSON object (see Result) on stdout or -out.
package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

type config struct {
	url          string
	cert, key    string
	ca           string
	insecure     bool
	op           string
	keyName      string
	conns        int
	inflight     int
	duration     time.Duration
	warmup       time.Duration
	proto        string
	rate         float64
	pool         int
	bulk         int
	listPrefix   string
	listPattern  string
	prefix       string
	resume       bool
	pids         string
	out          string
	setupConns   int
	transitMount string
	vaultToken   string
}

func main() {
	var c config
	flag.StringVar(&c.url, "url", "", "target base URL, e.g. https://127.0.0.1:7373")
	flag.StringVar(&c.cert, "cert", "", "client certificate (PEM)")
	flag.StringVar(&c.key, "key", "", "client private key (PEM)")
	flag.StringVar(&c.ca, "ca", "", "CA / server certificate to trust (PEM)")
	flag.BoolVar(&c.insecure, "insecure", false, "skip server certificate verification")
	flag.StringVar(&c.op, "op", "generate", "generate | decrypt | mix | create | list | bulk | churn | floor-get | transit-encrypt | transit-decrypt | transit-datakey (Vault Transit: -key-name is the Transit key, the token comes from $LOADGEN_VAULT_TOKEN)")
	flag.StringVar(&c.transitMount, "transit-mount", "transit", "Vault Transit mount (transit-* ops)")
	flag.StringVar(&c.keyName, "key-name", "bench-key", "key for generate/decrypt/mix/bulk/churn")
	flag.IntVar(&c.conns, "conns", 16, "connections (churn: concurrent clients, each opening a fresh connection per request)")
	flag.IntVar(&c.inflight, "inflight", 1, "requests in flight per connection (h2 only; HTTP/1.1 is always 1)")
	flag.DurationVar(&c.duration, "duration", 10*time.Second, "measured duration")
	flag.DurationVar(&c.warmup, "warmup", 2*time.Second, "warm-up before measuring (same load, not recorded)")
	flag.StringVar(&c.proto, "proto", "h1", "h1 (HTTP/1.1) | h2")
	flag.Float64Var(&c.rate, "rate", 0, "total requests/s (open loop, latency measured from the scheduled send time); 0 = closed loop")
	flag.IntVar(&c.pool, "pool", 1000, "ciphertexts to generate first for decrypt/mix/bulk")
	flag.IntVar(&c.bulk, "bulk", 1000, "ciphertexts per bulk decrypt request")
	flag.StringVar(&c.listPrefix, "list-prefix", "ls-", "list: name prefix (requests /v1/key/list/<prefix>*)")
	flag.StringVar(&c.listPattern, "list-pattern", "", "list: the whole pattern (requests /v1/key/list/<pattern>; overrides -list-prefix)")
	flag.StringVar(&c.prefix, "create-prefix", "", "create: key name prefix (default: random)")
	flag.BoolVar(&c.resume, "resume", false, "churn: allow TLS session resumption (default: full handshakes)")
	flag.StringVar(&c.pids, "pids", "", "comma-separated server pids: their CPU time (with all descendants) is sampled around the measured window")
	flag.StringVar(&c.out, "out", "", "write the JSON result here (default stdout)")
	flag.IntVar(&c.setupConns, "setup-conns", 8, "connections used to build the ciphertext pool")
	flag.Parse()
	if err := run(c); err != nil {
		fmt.Fprintln(os.Stderr, "loadgen:", err)
		os.Exit(1)
	}
}

// ---------------------------------------------------------------- target and TLS

type target struct {
	addr, host string
	tls        *tls.Config
	dials      atomic.Int64
	resumed    atomic.Int64
	closedBy   atomic.Int64 // keep-alive connections the server ended with Connection: close (or HTTP/1.0, or EOF-delimited body)
	deadline   atomic.Int64 // unix ns applied to new connections
	tlsOnce    sync.Once
	tlsInfo    map[string]any
}

func newTarget(c config, h2 bool) (*target, error) {
	u, err := url.Parse(c.url)
	if err != nil || u.Scheme != "https" || u.Host == "" {
		return nil, fmt.Errorf("-url must be https://host:port, got %q", c.url)
	}
	host := u.Hostname()
	port := u.Port()
	if port == "" {
		port = "443"
	}
	cfg := &tls.Config{ServerName: host, MinVersion: tls.VersionTLS12}
	if c.cert != "" || c.key != "" {
		pair, err := tls.LoadX509KeyPair(c.cert, c.key)
		if err != nil {
			return nil, fmt.Errorf("client certificate: %w", err)
		}
		cfg.Certificates = []tls.Certificate{pair}
	}
	if c.insecure {
		cfg.InsecureSkipVerify = true
	} else if c.ca != "" {
		pem, err := os.ReadFile(c.ca)
		if err != nil {
			return nil, err
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("-ca %s: no certificate", c.ca)
		}
		cfg.RootCAs = pool
	}
	if h2 {
		cfg.NextProtos = []string{"h2", "http/1.1"}
	} else {
		cfg.NextProtos = []string{"http/1.1"}
	}
	if c.op == "churn" && c.resume {
		cfg.ClientSessionCache = tls.NewLRUClientSessionCache(4096)
	}
	return &target{addr: net.JoinHostPort(host, port), host: u.Host, tls: cfg}, nil
}

func (t *target) dial(ctx context.Context) (*tls.Conn, error) {
	d := net.Dialer{Timeout: 10 * time.Second}
	raw, err := d.DialContext(ctx, "tcp", t.addr)
	if err != nil {
		return nil, err
	}
	if dl := t.deadline.Load(); dl != 0 {
		raw.SetDeadline(time.Unix(0, dl))
	}
	tc := tls.Client(raw, t.tls)
	if err := tc.HandshakeContext(ctx); err != nil {
		raw.Close()
		return nil, err
	}
	t.dials.Add(1)
	st := tc.ConnectionState()
	if st.DidResume {
		t.resumed.Add(1)
	}
	t.tlsOnce.Do(func() {
		t.tlsInfo = map[string]any{
			"version": tls.VersionName(st.Version),
			"cipher":  tls.CipherSuiteName(st.CipherSuite),
			"curve":   st.CurveID.String(),
			"alpn":    st.NegotiatedProtocol,
		}
	})
	return tc, nil
}

// ---------------------------------------------------------------- raw HTTP/1.1 client

type h1conn struct {
	t    *target
	c    *tls.Conn
	br   *bufio.Reader
	wbuf []byte
	body []byte
}

type request struct {
	method, path string
	body         []byte
	close        bool
	header       string // extra header lines, each ending in \r\n (Vault's X-Vault-Token)
}

var errProto = errors.New("malformed HTTP response")

// do sends one request and reads the response; the returned body is valid until the next call.
func (h *h1conn) do(ctx context.Context, r request) (int, []byte, error) {
	if h.c == nil {
		c, err := h.t.dial(ctx)
		if err != nil {
			return 0, nil, err
		}
		h.c = c
		if h.br == nil {
			h.br = bufio.NewReaderSize(c, 64<<10)
		} else {
			h.br.Reset(c)
		}
	}
	w := h.wbuf[:0]
	w = append(w, r.method...)
	w = append(w, ' ')
	w = append(w, r.path...)
	w = append(w, " HTTP/1.1\r\nHost: "...)
	w = append(w, h.t.host...)
	w = append(w, "\r\nUser-Agent: kesd-bench-loadgen\r\n"...)
	w = append(w, r.header...)
	if r.body != nil {
		w = append(w, "Content-Type: application/json\r\nContent-Length: "...)
		w = strconv.AppendInt(w, int64(len(r.body)), 10)
		w = append(w, "\r\n"...)
	}
	if r.close {
		w = append(w, "Connection: close\r\n"...)
	}
	w = append(w, "\r\n"...)
	w = append(w, r.body...)
	h.wbuf = w
	if _, err := h.c.Write(w); err != nil {
		h.drop()
		return 0, nil, err
	}
	status, body, keep, err := h.read(r.method == "HEAD")
	if err == nil && !keep && !r.close {
		h.t.closedBy.Add(1)
	}
	if err != nil || !keep || r.close {
		h.drop()
	}
	return status, body, err
}

func (h *h1conn) drop() {
	if h.c != nil {
		h.c.Close()
		h.c = nil
	}
}

func (h *h1conn) read(head bool) (status int, body []byte, keep bool, err error) {
	br := h.br
	for {
		line, err := br.ReadSlice('\n')
		if err != nil {
			return 0, nil, false, err
		}
		if len(line) < 12 || !bytes.HasPrefix(line, []byte("HTTP/1.")) {
			return 0, nil, false, errProto
		}
		status, err = strconv.Atoi(string(line[9:12]))
		if err != nil {
			return 0, nil, false, errProto
		}
		keep = line[7] == '1'
		cl, chunked := -1, false
		for {
			hl, err := br.ReadSlice('\n')
			if err != nil {
				return 0, nil, false, err
			}
			if len(hl) <= 2 {
				break
			}
			colon := bytes.IndexByte(hl, ':')
			if colon < 0 {
				return 0, nil, false, errProto
			}
			name := hl[:colon]
			val := bytes.TrimSpace(hl[colon+1:])
			switch {
			case asciiEq(name, "content-length"):
				cl, err = strconv.Atoi(string(val))
				if err != nil {
					return 0, nil, false, errProto
				}
			case asciiEq(name, "transfer-encoding"):
				chunked = bytes.Contains(bytes.ToLower(val), []byte("chunked"))
			case asciiEq(name, "connection"):
				if asciiEq(val, "close") {
					keep = false
				}
			}
		}
		if status >= 100 && status < 200 {
			continue // interim response
		}
		h.body = h.body[:0]
		switch {
		case head || status == 204 || status == 304:
		case chunked:
			for {
				sl, err := br.ReadSlice('\n')
				if err != nil {
					return 0, nil, false, err
				}
				s := bytes.TrimSpace(sl)
				if i := bytes.IndexByte(s, ';'); i >= 0 {
					s = s[:i]
				}
				n, err := strconv.ParseInt(string(s), 16, 64)
				if err != nil {
					return 0, nil, false, errProto
				}
				if n == 0 {
					for { // trailers
						tl, err := br.ReadSlice('\n')
						if err != nil {
							return 0, nil, false, err
						}
						if len(tl) <= 2 {
							break
						}
					}
					break
				}
				if h.body, err = readN(br, h.body, int(n)); err != nil {
					return 0, nil, false, err
				}
				if _, err := br.Discard(2); err != nil {
					return 0, nil, false, err
				}
			}
		case cl >= 0:
			if h.body, err = readN(br, h.body, cl); err != nil {
				return 0, nil, false, err
			}
		default:
			b, err := io.ReadAll(br)
			if err != nil {
				return 0, nil, false, err
			}
			h.body = append(h.body, b...)
			keep = false
		}
		return status, h.body, keep, nil
	}
}

func readN(br *bufio.Reader, dst []byte, n int) ([]byte, error) {
	start := len(dst)
	if cap(dst)-start < n {
		nd := make([]byte, start, start+n+n/2)
		copy(nd, dst)
		dst = nd
	}
	dst = dst[:start+n]
	_, err := io.ReadFull(br, dst[start:])
	return dst, err
}

func asciiEq(b []byte, s string) bool {
	if len(b) != len(s) {
		return false
	}
	for i := range b {
		c := b[i]
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		if c != s[i] {
			return false
		}
	}
	return true
}

// ---------------------------------------------------------------- h2 client (net/http)

type h2conn struct {
	t      *target
	client *http.Client
	base   string
}

func newH2(t *target, base string) *h2conn {
	tr := &http.Transport{
		DialTLSContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			return t.dial(ctx)
		},
		ForceAttemptHTTP2:   true,
		MaxConnsPerHost:     1,
		MaxIdleConnsPerHost: 1,
		IdleConnTimeout:     10 * time.Minute,
		DisableCompression:  true,
	}
	return &h2conn{t: t, client: &http.Client{Transport: tr}, base: base}
}

func (h *h2conn) do(ctx context.Context, r request, buf *bytes.Buffer) (int, []byte, error) {
	var body io.Reader
	if r.body != nil {
		body = bytes.NewReader(r.body)
	}
	req, err := http.NewRequestWithContext(ctx, r.method, h.base+r.path, body)
	if err != nil {
		return 0, nil, err
	}
	if r.body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := h.client.Do(req)
	if err != nil {
		return 0, nil, err
	}
	buf.Reset()
	_, err = buf.ReadFrom(resp.Body)
	resp.Body.Close()
	return resp.StatusCode, buf.Bytes(), err
}

// ---------------------------------------------------------------- operations

type ops struct {
	c        config
	generate request
	decrypt  []request
	bulkReq  request
	list     request
	floorGet request
	transit  request // transit-encrypt and transit-datakey: the same request every time
}

// next returns the request a worker sends as its seq-th request.
func (o *ops) next(w, seq int) request {
	switch o.c.op {
	case "generate", "churn":
		r := o.generate
		r.close = o.c.op == "churn"
		return r
	case "decrypt":
		return o.decrypt[(w*7919+seq)%len(o.decrypt)]
	case "mix":
		if (w+seq)%2 == 0 {
			return o.generate
		}
		return o.decrypt[(w*7919+seq)%len(o.decrypt)]
	case "create":
		return request{method: "POST", path: "/v1/key/create/" + o.c.prefix + strconv.Itoa(w) + "-" + strconv.Itoa(seq)}
	case "list":
		return o.list
	case "bulk":
		return o.bulkReq
	case "floor-get":
		return o.floorGet
	case "transit-encrypt", "transit-datakey":
		return o.transit
	case "transit-decrypt":
		return o.decrypt[(w*7919+seq)%len(o.decrypt)]
	}
	panic("unknown op")
}

func (o *ops) isGenerate(r request) bool { return r.path == o.generate.path }

// buildPool generates ciphertexts with a few setup connections.
func buildPool(ctx context.Context, t *target, c config) ([]string, error) {
	n := c.pool
	if c.op == "bulk" && n < c.bulk {
		n = c.bulk
	}
	out := make([]string, n)
	var next atomic.Int64
	var firstErr error
	var mu sync.Mutex
	var wg sync.WaitGroup
	gen := request{method: "POST", path: "/v1/key/generate/" + c.keyName, body: []byte("{}")}
	// The pool is built over hand-written HTTP/1.1: under -proto h2 its connections must not offer h2 in ALPN.
	if c.proto == "h2" {
		cfg := t.tls.Clone()
		cfg.NextProtos = []string{"http/1.1"}
		t = &target{addr: t.addr, host: t.host, tls: cfg}
	}
	if c.op == "transit-decrypt" {
		gen = transitEncrypt(c)
	}
	for i := 0; i < c.setupConns; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			h := &h1conn{t: t}
			defer h.drop()
			for {
				i := int(next.Add(1) - 1)
				if i >= n {
					return
				}
				status, body, err := h.do(ctx, gen)
				var reply struct {
					Ciphertext string `json:"ciphertext"`
					Data       struct {
						Ciphertext string `json:"ciphertext"`
					} `json:"data"` // Vault's answers
				}
				if err == nil && status != 200 {
					err = fmt.Errorf("generate: HTTP %d: %s", status, truncate(body))
				}
				if err == nil {
					err = json.Unmarshal(body, &reply)
				}
				if reply.Ciphertext == "" {
					reply.Ciphertext = reply.Data.Ciphertext
				}
				if err == nil && reply.Ciphertext == "" {
					err = fmt.Errorf("generate: no ciphertext in %s", truncate(body))
				}
				if err != nil {
					mu.Lock()
					if firstErr == nil {
						firstErr = err
					}
					mu.Unlock()
					next.Store(int64(n))
					return
				}
				out[i] = reply.Ciphertext
			}
		}()
	}
	wg.Wait()
	return out, firstErr
}

// transitEncrypt: Vault Transit encrypting a 32-byte plaintext (a data key), the request a KMS client makes to wrap one.
func transitEncrypt(c config) request {
	pt := make([]byte, 32)
	rand.Read(pt)
	b, _ := json.Marshal(map[string]string{"plaintext": base64.StdEncoding.EncodeToString(pt)})
	return request{method: "POST", path: "/v1/" + c.transitMount + "/encrypt/" + c.keyName, body: b, header: vaultHeader(c)}
}

func vaultHeader(c config) string { return "X-Vault-Token: " + c.vaultToken + "\r\n" }

func truncate(b []byte) string {
	if len(b) > 200 {
		return string(b[:200]) + "…"
	}
	return string(b)
}

// ---------------------------------------------------------------- measurement

type stats struct {
	lat      []int64 // ns, from the scheduled send time (closed loop: from the send)
	svc      []int64 // ns, from the actual send (only with -rate)
	ops      int64
	bytes    int64
	errors   map[string]int64
	errEx    map[string]string
	timeline []int64
	gen, dec int64
}

func (s *stats) fail(key, example string) {
	if s.errors == nil {
		s.errors, s.errEx = map[string]int64{}, map[string]string{}
	}
	s.errors[key]++
	if _, ok := s.errEx[key]; !ok {
		s.errEx[key] = example
	}
}

func errKey(err error) string {
	var ne net.Error
	switch {
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return "conn:eof"
	case errors.Is(err, syscall.ECONNRESET):
		return "conn:reset"
	case errors.Is(err, syscall.ECONNREFUSED):
		return "conn:refused"
	case errors.As(err, &ne) && ne.Timeout():
		return "conn:timeout"
	case errors.Is(err, errProto):
		return "proto"
	}
	return "conn:other"
}

type window struct {
	t0, t1 time.Time
}

type Result struct {
	Op          string             `json:"op"`
	URL         string             `json:"url"`
	Proto       string             `json:"proto"`
	Conns       int                `json:"conns"`
	Inflight    int                `json:"inflight"`
	Concurrency int                `json:"concurrency"`
	Rate        float64            `json:"rate,omitempty"`
	DurationS   float64            `json:"duration_s"`
	WarmupS     float64            `json:"warmup_s"`
	Ops         int64              `json:"ops"`
	OpsPerS     float64            `json:"ops_per_s"`
	Errors      map[string]int64   `json:"errors"`
	ErrorSample map[string]string  `json:"error_sample,omitempty"`
	LatencyMs   map[string]float64 `json:"latency_ms"`
	ServiceMs   map[string]float64 `json:"service_ms,omitempty"`
	Conn        map[string]int64   `json:"connections"`
	TLS         map[string]any     `json:"tls"`
	ServerCPU   *cpuReport         `json:"server_cpu,omitempty"`
	ClientCPU   cpuReport          `json:"client_cpu"`
	Machine     machineReport      `json:"machine"`
	Timeline    []int64            `json:"timeline_ops_per_s"`
	RespBytes   float64            `json:"response_bytes_avg"`
	Mix         map[string]int64   `json:"mix,omitempty"`
	Stuck       int                `json:"stuck_workers,omitempty"`
	PredialS    float64            `json:"predial_s,omitempty"`
	GoMaxProcs  int                `json:"loadgen_gomaxprocs"`
}

// machineReport: CPU use of the whole machine in the window, to see noise from other processes.
type machineReport struct {
	CPUs       int     `json:"cpus"`
	BusyCores  float64 `json:"busy_cores"`
	OtherCores float64 `json:"other_cores"` // busy minus the server and this load generator
	StealCores float64 `json:"steal_cores"`
}

type cpuReport struct {
	Pids     []int   `json:"pids,omitempty"`
	Procs    int     `json:"processes,omitempty"`
	Seconds  float64 `json:"seconds"`
	Cores    float64 `json:"cores"`
	UsPerReq float64 `json:"us_per_req"`
}

func run(c config) error {
	switch c.op {
	case "generate", "decrypt", "mix", "create", "list", "bulk", "churn", "floor-get":
	case "transit-encrypt", "transit-decrypt", "transit-datakey":
		// The token comes from the environment, not argv (which ps shows).
		c.vaultToken = os.Getenv("LOADGEN_VAULT_TOKEN")
		if c.vaultToken == "" {
			return fmt.Errorf("-op %s needs the Vault token in $LOADGEN_VAULT_TOKEN", c.op)
		}
		if c.proto != "h1" {
			return fmt.Errorf("-op %s is HTTP/1.1 only", c.op)
		}
	default:
		return fmt.Errorf("unknown -op %q", c.op)
	}
	if c.proto != "h1" && c.proto != "h2" {
		return fmt.Errorf("-proto must be h1 or h2")
	}
	if c.conns < 1 || c.inflight < 1 {
		return fmt.Errorf("-conns and -inflight must be ≥ 1")
	}
	if c.proto == "h1" && c.inflight != 1 {
		return fmt.Errorf("HTTP/1.1 carries one request per connection at a time: use -conns for concurrency, or -proto h2")
	}
	if c.op == "churn" && c.proto != "h1" {
		return fmt.Errorf("churn is HTTP/1.1 only")
	}
	if c.prefix == "" {
		b := make([]byte, 4)
		rand.Read(b)
		c.prefix = "c" + hex.EncodeToString(b) + "-"
	}
	var pids []int
	if c.pids != "" {
		for _, p := range strings.Split(c.pids, ",") {
			n, err := strconv.Atoi(strings.TrimSpace(p))
			if err != nil {
				return fmt.Errorf("-pids: %w", err)
			}
			pids = append(pids, n)
		}
	}

	t, err := newTarget(c, c.proto == "h2")
	if err != nil {
		return err
	}
	ctx := context.Background()
	o := &ops{c: c,
		generate: request{method: "POST", path: "/v1/key/generate/" + c.keyName, body: []byte("{}")},
		list:     request{method: "GET", path: "/v1/key/list/" + listPattern(c)},
		floorGet: request{method: "GET", path: "/"},
	}
	switch c.op {
	case "transit-encrypt":
		o.transit = transitEncrypt(c)
	case "transit-datakey":
		o.transit = request{method: "POST", path: "/v1/" + c.transitMount + "/datakey/plaintext/" + c.keyName, body: []byte("{}"), header: vaultHeader(c)}
	}
	if c.op == "decrypt" || c.op == "mix" || c.op == "bulk" || c.op == "transit-decrypt" {
		t.deadline.Store(time.Now().Add(2 * time.Minute).UnixNano())
		pool, err := buildPool(ctx, t, c)
		if err != nil {
			return fmt.Errorf("building the ciphertext pool: %w", err)
		}
		for _, ct := range pool {
			b, _ := json.Marshal(map[string]string{"ciphertext": ct})
			if c.op == "transit-decrypt" {
				o.decrypt = append(o.decrypt, request{method: "POST", path: "/v1/" + c.transitMount + "/decrypt/" + c.keyName, body: b, header: vaultHeader(c)})
			} else {
				o.decrypt = append(o.decrypt, request{method: "POST", path: "/v1/key/decrypt/" + c.keyName, body: b})
			}
		}
		if c.op == "bulk" {
			items := make([]map[string]string, c.bulk)
			for i := range items {
				items[i] = map[string]string{"ciphertext": pool[i%len(pool)]}
			}
			b, _ := json.Marshal(items)
			o.bulkReq = request{method: "POST", path: "/v1/key/bulk/decrypt/" + c.keyName, body: b}
		}
		t.dials.Store(0)
		t.resumed.Store(0)
	}

	// Keep-alive HTTP/1.1: open the whole pool first (a handshake storm is not part of the warm-up or the window).
	workers := c.conns * c.inflight
	t.deadline.Store(time.Now().Add(c.warmup + c.duration + 2*time.Minute).UnixNano())
	var pre []*h1conn
	var predial time.Duration
	if c.proto == "h1" && c.op != "churn" {
		p0 := time.Now()
		pre = make([]*h1conn, workers)
		sem := make(chan struct{}, 32)
		var pwg sync.WaitGroup
		var perr atomic.Value
		for i := range pre {
			pre[i] = &h1conn{t: t}
			pwg.Add(1)
			sem <- struct{}{}
			go func(h *h1conn) {
				defer pwg.Done()
				defer func() { <-sem }()
				tc, err := t.dial(ctx)
				if err != nil {
					perr.Store(err)
					return
				}
				h.c, h.br = tc, bufio.NewReaderSize(tc, 64<<10)
			}(pre[i])
		}
		pwg.Wait()
		if err, _ := perr.Load().(error); err != nil {
			return fmt.Errorf("opening %d connections: %w", workers, err)
		}
		predial = time.Since(p0)
	}

	start := time.Now()
	w := window{t0: start.Add(c.warmup), t1: start.Add(c.warmup + c.duration)}
	t.deadline.Store(w.t1.Add(15 * time.Second).UnixNano())
	seconds := int(c.duration/time.Second) + 1
	all := make([]*stats, workers)
	var interval time.Duration
	if c.rate > 0 {
		interval = time.Duration(float64(workers) / c.rate * float64(time.Second))
	}

	// CPU and dial samples at the window edges.
	var cpu0, cpu1 cpuSample
	var dials0, dials1 int64
	sampled := make(chan struct{})
	go func() {
		time.Sleep(time.Until(w.t0))
		cpu0 = sampleCPU(pids)
		dials0 = t.dials.Load()
		time.Sleep(time.Until(w.t1))
		cpu1 = sampleCPU(pids)
		dials1 = t.dials.Load()
		close(sampled)
	}()

	var wg sync.WaitGroup
	var h2s []*h2conn
	if c.proto == "h2" {
		for i := 0; i < c.conns; i++ {
			h2s = append(h2s, newH2(t, strings.TrimRight(c.url, "/")))
		}
	}
	for i := 0; i < workers; i++ {
		s := &stats{timeline: make([]int64, seconds), lat: make([]int64, 0, 4096)}
		all[i] = s
		wg.Add(1)
		go func(id int) {
			defer wg.Done()
			var h1 *h1conn
			var h2 *h2conn
			var buf bytes.Buffer
			switch {
			case h2s != nil:
				h2 = h2s[id%c.conns]
			case pre != nil:
				h1 = pre[id]
				defer h1.drop()
			default:
				h1 = &h1conn{t: t}
				defer h1.drop()
			}
			next := start
			if interval > 0 {
				next = start.Add(time.Duration(int64(interval) * int64(id) / int64(workers)))
			}
			for seq := 0; ; seq++ {
				if interval > 0 {
					if d := time.Until(next); d > 0 {
						time.Sleep(d)
					}
				}
				r := o.next(id, seq)
				sent := time.Now()
				if sent.After(w.t1) {
					return
				}
				var status int
				var body []byte
				var err error
				if h1 != nil {
					status, body, err = h1.do(ctx, r)
				} else {
					status, body, err = h2.do(ctx, r, &buf)
				}
				done := time.Now()
				sched := sent
				if interval > 0 {
					sched = next
					next = next.Add(interval)
				}
				if sched.Before(w.t0) || done.After(w.t1) {
					if err != nil && interval == 0 && h1 != nil {
						time.Sleep(10 * time.Millisecond) // don't spin on a dead server
					}
					continue
				}
				switch {
				case err != nil:
					s.fail(errKey(err), err.Error())
					time.Sleep(time.Millisecond)
				case status != 200:
					s.fail(strconv.Itoa(status), truncate(body))
				default:
					s.ops++
					s.bytes += int64(len(body))
					s.lat = append(s.lat, int64(done.Sub(sched)))
					if interval > 0 {
						s.svc = append(s.svc, int64(done.Sub(sent)))
					}
					if sec := int(done.Sub(w.t0) / time.Second); sec < seconds {
						s.timeline[sec]++
					}
					if c.op == "mix" {
						if o.isGenerate(r) {
							s.gen++
						} else {
							s.dec++
						}
					}
				}
			}
		}(i)
	}
	finished := make(chan struct{})
	go func() { wg.Wait(); close(finished) }()
	<-sampled
	stuck := 0
	select {
	case <-finished:
	case <-time.After(20 * time.Second):
		stuck = -1
	}

	// Aggregate.
	res := Result{Op: c.op, URL: c.url, Proto: c.proto, Conns: c.conns, Inflight: c.inflight, Concurrency: workers, Rate: c.rate,
		DurationS: w.t1.Sub(w.t0).Seconds(), WarmupS: c.warmup.Seconds(), Errors: map[string]int64{}, TLS: t.tlsInfo,
		GoMaxProcs: runtime.GOMAXPROCS(0), PredialS: predial.Seconds()}
	var lat, svc []int64
	var bytesTotal, gen, dec int64
	res.Timeline = make([]int64, int(c.duration/time.Second))
	for _, s := range all {
		res.Ops += s.ops
		bytesTotal += s.bytes
		lat = append(lat, s.lat...)
		svc = append(svc, s.svc...)
		gen += s.gen
		dec += s.dec
		for k, v := range s.errors {
			res.Errors[k] += v
			if res.ErrorSample == nil {
				res.ErrorSample = map[string]string{}
			}
			if _, ok := res.ErrorSample[k]; !ok {
				res.ErrorSample[k] = s.errEx[k]
			}
		}
		for i := range res.Timeline {
			res.Timeline[i] += s.timeline[i]
		}
	}
	if stuck != 0 {
		res.Stuck = workers // unknown how many; mark the run
	}
	res.OpsPerS = float64(res.Ops) / res.DurationS
	res.LatencyMs = percentiles(lat)
	if c.rate > 0 {
		res.ServiceMs = percentiles(svc)
	}
	if res.Ops > 0 {
		res.RespBytes = float64(bytesTotal) / float64(res.Ops)
	}
	if c.op == "mix" {
		res.Mix = map[string]int64{"generate": gen, "decrypt": dec}
	}
	res.Conn = map[string]int64{"requested": int64(c.conns), "dialed_total": t.dials.Load(), "dialed_in_window": dials1 - dials0, "resumed": t.resumed.Load(), "closed_by_server": t.closedBy.Load()}
	if len(pids) > 0 {
		secs := cpu1.server - cpu0.server
		res.ServerCPU = &cpuReport{Pids: pids, Procs: cpu1.procs, Seconds: secs, Cores: secs / res.DurationS}
		if res.Ops > 0 {
			res.ServerCPU.UsPerReq = secs / float64(res.Ops) * 1e6
		}
	}
	cs := cpu1.client - cpu0.client
	res.ClientCPU = cpuReport{Seconds: cs, Cores: cs / res.DurationS}
	if res.Ops > 0 {
		res.ClientCPU.UsPerReq = cs / float64(res.Ops) * 1e6
	}
	res.Machine = machineReport{CPUs: runtime.NumCPU(), BusyCores: (cpu1.busy - cpu0.busy) / res.DurationS, StealCores: (cpu1.steal - cpu0.steal) / res.DurationS}
	res.Machine.OtherCores = res.Machine.BusyCores - res.ClientCPU.Cores
	if res.ServerCPU != nil {
		res.Machine.OtherCores -= res.ServerCPU.Cores
	}
	out, _ := json.MarshalIndent(res, "", "  ")
	out = append(out, '\n')
	if c.out != "" {
		return os.WriteFile(c.out, out, 0o644)
	}
	_, err = os.Stdout.Write(out)
	return err
}

func percentiles(v []int64) map[string]float64 {
	m := map[string]float64{}
	if len(v) == 0 {
		return m
	}
	sort.Slice(v, func(i, j int) bool { return v[i] < v[j] })
	at := func(q float64) float64 {
		i := int(q*float64(len(v))+0.5) - 1
		if i < 0 {
			i = 0
		}
		if i >= len(v) {
			i = len(v) - 1
		}
		return float64(v[i]) / 1e6
	}
	var sum float64
	for _, x := range v {
		sum += float64(x)
	}
	m["p50"], m["p90"], m["p95"], m["p99"], m["p999"] = at(0.50), at(0.90), at(0.95), at(0.99), at(0.999)
	m["min"], m["max"], m["mean"] = float64(v[0])/1e6, float64(v[len(v)-1])/1e6, sum/float64(len(v))/1e6
	return m
}

// ---------------------------------------------------------------- CPU accounting from /proc

type cpuSample struct {
	server float64 // seconds, server pids and all their live descendants
	procs  int
	client float64 // seconds, this process
	busy   float64 // seconds, the whole machine (all CPUs, not idle or iowait)
	steal  float64 // seconds, stolen by the hypervisor
}

const clkTck = 100 // USER_HZ on Linux

func sampleCPU(pids []int) cpuSample {
	var s cpuSample
	seen := map[int]bool{}
	var walk func(pid int)
	walk = func(pid int) {
		if seen[pid] {
			return
		}
		seen[pid] = true
		if t, ok := procTicks(pid); ok {
			s.server += float64(t) / clkTck
			s.procs++
		}
		tasks, _ := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
		for _, task := range tasks {
			b, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%s/children", pid, task.Name()))
			if err != nil {
				continue
			}
			for _, f := range strings.Fields(string(b)) {
				if child, err := strconv.Atoi(f); err == nil {
					walk(child)
				}
			}
		}
	}
	for _, p := range pids {
		walk(p)
	}
	if b, err := os.ReadFile("/proc/stat"); err == nil {
		line, _, _ := strings.Cut(string(b), "\n")
		f := strings.Fields(line) // cpu user nice system idle iowait irq softirq steal …
		var total float64
		for i := 1; i < len(f); i++ {
			v, _ := strconv.ParseFloat(f[i], 64)
			if i <= 8 { // guest time is already counted in user
				total += v
			}
			switch i {
			case 4, 5:
				total -= v
			case 8:
				s.steal = v / clkTck
			}
		}
		s.busy = total / clkTck
	}
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) == nil {
		s.client = float64(ru.Utime.Nano()+ru.Stime.Nano()) / 1e9
	}
	return s
}

// procTicks is utime+stime (all threads) of a process, in clock ticks.
func procTicks(pid int) (int64, bool) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, false
	}
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, false
	}
	f := strings.Fields(string(b[i+1:]))
	// after ")": state(3) ppid(4) … utime(14) stime(15) → indexes 11 and 12 here
	if len(f) < 13 {
		return 0, false
	}
	u, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	return u + st, true
}

// listPattern is what a list requests: KES v0.24 takes a plain name prefix ("ls-*" matches no key there), kesd the
// v0.22 pattern ("ls-*").
func listPattern(c config) string {
	if c.listPattern != "" {
		return c.listPattern
	}
	return c.listPrefix + "*"
}
