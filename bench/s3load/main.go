// s3load: a closed-loop S3 load generator for the end-to-end benchmark (bench/e2e.mts). It PUTs or GETs small
// objects on one MinIO with -conns requests in flight, over plain HTTP/1.1 keep-alive connections, and signs each
// request with AWS SigV4 itself (UNSIGNED-PAYLOAD, so neither side hashes the body). Standard library only, like
// bench/loadgen: the client costs a few tens of µs of CPU per request (it reports how much), so the numbers
// are MinIO's and its KMS's, not the client's.
//
//	S3LOAD_ACCESS_KEY=… S3LOAD_SECRET_KEY=… s3load -endpoint http://127.0.0.1:9000 -bucket b -op put -duration 20s
//
// Object names are <prefix><8-digit index> (put: from -start on); every object holds the same -size bytes derived from -seed, so a GET
// run (over indexes [0, -objects)) checks each body byte for byte. -op kms-metrics prints MinIO's own KMS
// counters (GET /minio/kms/v1/metrics, admin credentials). Output: one JSON object on stdout.
package main

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/url"
	"os"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

type config struct {
	endpoint string
	bucket   string
	prefix   string
	op       string
	region   string
	size     int
	conns    int
	duration time.Duration
	warmup   time.Duration
	objects  int64
	start    int64
	seed     uint64
	pids     string
}

func main() {
	var c config
	flag.StringVar(&c.endpoint, "endpoint", "", "MinIO base URL, e.g. http://127.0.0.1:9000")
	flag.StringVar(&c.bucket, "bucket", "bench", "bucket (must exist)")
	flag.StringVar(&c.prefix, "prefix", "obj-", "object name prefix")
	flag.StringVar(&c.op, "op", "put", "put | get | kms-metrics")
	flag.StringVar(&c.region, "region", "us-east-1", "SigV4 region")
	flag.IntVar(&c.size, "size", 4096, "object size in bytes")
	flag.IntVar(&c.conns, "conns", 16, "concurrent requests (one connection each)")
	flag.DurationVar(&c.duration, "duration", 10*time.Second, "measured duration")
	flag.DurationVar(&c.warmup, "warmup", 2*time.Second, "warm-up before measuring (same load, not recorded; PUT objects still count)")
	flag.Int64Var(&c.objects, "objects", 0, "get: read random objects with indexes [0, objects)")
	flag.Int64Var(&c.start, "start", 0, "put: first object index (to add objects after an earlier put run)")
	flag.Uint64Var(&c.seed, "seed", 1, "payload seed (put and get must agree)")
	flag.StringVar(&c.pids, "pids", "", "name=pid,…: CPU time of each process (with its descendants) over the measured window")
	flag.Parse()
	if err := run(c); err != nil {
		fmt.Fprintln(os.Stderr, "s3load:", err)
		os.Exit(1)
	}
}

func run(c config) error {
	base, err := url.Parse(c.endpoint)
	if err != nil || (base.Scheme != "http" && base.Scheme != "https") || base.Host == "" {
		return fmt.Errorf("-endpoint must be http(s)://host:port, got %q", c.endpoint)
	}
	s := &signer{access: os.Getenv("S3LOAD_ACCESS_KEY"), secret: os.Getenv("S3LOAD_SECRET_KEY"), region: c.region}
	if s.access == "" || s.secret == "" {
		return errors.New("set S3LOAD_ACCESS_KEY and S3LOAD_SECRET_KEY")
	}
	if c.conns < 1 || c.size < 0 || c.duration <= 0 || c.warmup < 0 {
		return errors.New("-conns ≥ 1, -size ≥ 0, -duration > 0, -warmup ≥ 0")
	}
	cl := &client{base: base, sign: s, http: &http.Client{
		Timeout:   60 * time.Second,
		Transport: &http.Transport{MaxIdleConns: c.conns, MaxIdleConnsPerHost: c.conns, MaxConnsPerHost: c.conns, DisableCompression: true, IdleConnTimeout: 90 * time.Second},
	}}
	switch c.op {
	case "kms-metrics":
		st, body, err := cl.do("GET", "/minio/kms/v1/metrics", nil)
		if err != nil {
			return err
		}
		if st != 200 {
			return fmt.Errorf("kms metrics: HTTP %d: %s", st, body)
		}
		_, err = os.Stdout.Write(append(body, '\n'))
		return err
	case "put", "get":
		if c.op == "get" && c.objects < 1 {
			return errors.New("get needs -objects ≥ 1 (the count a put run reported)")
		}
		groups, err := parsePids(c.pids)
		if err != nil {
			return err
		}
		res := load(c, cl, groups)
		return json.NewEncoder(os.Stdout).Encode(res)
	}
	return fmt.Errorf("unknown -op %q", c.op)
}

// ---------------------------------------------------------------- SigV4

const emptySHA256 = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"

type signer struct {
	access, secret, region string
	mu                     sync.Mutex
	day                    string
	key                    []byte
}

func hmacSHA256(key []byte, s string) []byte {
	m := hmac.New(sha256.New, key)
	m.Write([]byte(s))
	return m.Sum(nil)
}

// signingKey is derived once per UTC day.
func (s *signer) signingKey(day string) []byte {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.day != day {
		k := hmacSHA256([]byte("AWS4"+s.secret), day)
		k = hmacSHA256(k, s.region)
		k = hmacSHA256(k, "s3")
		s.key, s.day = hmacSHA256(k, "aws4_request"), day
	}
	return s.key
}

// sign adds x-amz-date, x-amz-content-sha256 and Authorization. Paths are plain ASCII names here, so the
// canonical URI is the path as sent; there is no query string.
func (s *signer) sign(r *http.Request, payloadHash string) {
	now := time.Now().UTC()
	amzDate := now.Format("20060102T150405Z")
	day := amzDate[:8]
	r.Header.Set("X-Amz-Date", amzDate)
	r.Header.Set("X-Amz-Content-Sha256", payloadHash)
	canonical := strings.Join([]string{
		r.Method, r.URL.EscapedPath(), "",
		"host:" + r.URL.Host, "x-amz-content-sha256:" + payloadHash, "x-amz-date:" + amzDate, "",
		"host;x-amz-content-sha256;x-amz-date", payloadHash,
	}, "\n")
	sum := sha256.Sum256([]byte(canonical))
	scope := day + "/" + s.region + "/s3/aws4_request"
	toSign := "AWS4-HMAC-SHA256\n" + amzDate + "\n" + scope + "\n" + hex.EncodeToString(sum[:])
	sig := hex.EncodeToString(hmacSHA256(s.signingKey(day), toSign))
	r.Header.Set("Authorization", "AWS4-HMAC-SHA256 Credential="+s.access+"/"+scope+", SignedHeaders=host;x-amz-content-sha256;x-amz-date, Signature="+sig)
}

type client struct {
	base *url.URL
	http *http.Client
	sign *signer
}

// do sends one signed request and reads the whole response body.
func (c *client) do(method, path string, body []byte) (int, []byte, error) {
	var rd io.Reader
	hash := emptySHA256
	if body != nil {
		rd = bytes.NewReader(body)
		hash = "UNSIGNED-PAYLOAD"
	}
	req, err := http.NewRequest(method, c.base.Scheme+"://"+c.base.Host+path, rd)
	if err != nil {
		return 0, nil, err
	}
	c.sign.sign(req, hash)
	res, err := c.http.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer res.Body.Close()
	out, err := io.ReadAll(res.Body)
	return res.StatusCode, out, err
}

// ---------------------------------------------------------------- the load

type result struct {
	Op          string             `json:"op"`
	Endpoint    string             `json:"endpoint"`
	Bucket      string             `json:"bucket"`
	Size        int                `json:"size"`
	Conns       int                `json:"conns"`
	DurationS   float64            `json:"duration_s"`
	WarmupS     float64            `json:"warmup_s"`
	Ops         int                `json:"ops"`
	OpsPerS     float64            `json:"ops_per_s"`
	MiBPerS     float64            `json:"mib_per_s"`
	Errors      map[string]int     `json:"errors"`
	ErrorSample map[string]string  `json:"error_sample,omitempty"`
	LatencyMs   map[string]float64 `json:"latency_ms"`
	Objects     int64              `json:"objects"`
	TotalOK     int64              `json:"total_ok"`
	PayloadHead string             `json:"payload_head"`
	CPU         map[string]cpu     `json:"cpu"`
	Machine     machine            `json:"machine"`
}

type cpu struct {
	Seconds float64 `json:"seconds"`
	Cores   float64 `json:"cores"`
	UsPerOp float64 `json:"us_per_op"`
}

type machine struct {
	BusyCores float64 `json:"busy_cores"`
	// IRQCores (irq + softirq: loopback traffic) and KernelThreadCores (writeback, journal) are mostly the load under
	// test; OtherCores is what is left of BusyCores after them and the measured processes: other work on the machine.
	IRQCores          float64 `json:"irq_cores"`
	KernelThreadCores float64 `json:"kthread_cores"`
	OtherCores        float64 `json:"other_cores"`
	StealCores        float64 `json:"steal_cores"`
	// TCP connections opened (connect()) in this network namespace over the window: the load generator keeps its
	// -conns connections, so this is mostly MinIO dialling its KMS (plus whatever else runs on the machine).
	TCPActiveOpens int64 `json:"tcp_active_opens"`
}

type worker struct {
	lat    []int64
	errs   map[string]int
	sample map[string]string
}

var s3Code = regexp.MustCompile(`<Code>([^<]+)</Code>`)

// fail counts a failed request; the first of each kind is kept with the time it ended (UTC), to line up with logs.
func (w *worker) fail(at time.Time, kind, msg string) {
	w.errs[kind]++
	if _, ok := w.sample[kind]; !ok {
		if len(msg) > 300 {
			msg = msg[:300]
		}
		w.sample[kind] = at.UTC().Format("15:04:05.000000") + " " + msg
	}
}

func payload(seed uint64, size int) []byte {
	var s [32]byte
	binary.LittleEndian.PutUint64(s[:8], seed)
	b := make([]byte, size)
	rand.NewChaCha8(s).Read(b)
	return b
}

func load(c config, cl *client, groups map[string]int) result {
	body := payload(c.seed, c.size)
	start := time.Now()
	warmEnd := start.Add(c.warmup)
	end := warmEnd.Add(c.duration)
	var next atomic.Int64
	var totalOK atomic.Int64 // 200s over the whole run, warm-up included: what MinIO asked its KMS for
	workers := make([]*worker, c.conns)
	var wg sync.WaitGroup
	var before, after snapshot
	var sampled sync.WaitGroup
	sampled.Add(1)
	go func() {
		defer sampled.Done()
		time.Sleep(time.Until(warmEnd))
		before = take(groups)
		time.Sleep(time.Until(end))
		after = take(groups)
	}()
	for i := range workers {
		w := &worker{errs: map[string]int{}, sample: map[string]string{}}
		workers[i] = w
		wg.Add(1)
		go func(rng *rand.Rand) {
			defer wg.Done()
			for {
				t0 := time.Now()
				if !t0.Before(end) {
					return
				}
				var idx int64
				if c.op == "put" {
					idx = c.start + next.Add(1) - 1
				} else {
					idx = rng.Int64N(c.objects)
				}
				path := fmt.Sprintf("/%s/%s%08d", c.bucket, c.prefix, idx)
				var st int
				var got []byte
				var err error
				if c.op == "put" {
					st, got, err = cl.do("PUT", path, body)
				} else {
					st, got, err = cl.do("GET", path, nil)
				}
				t1 := time.Now()
				ok := err == nil && st == 200
				if ok {
					totalOK.Add(1)
				}
				if t0.Before(warmEnd) || t1.After(end) {
					continue // outside the measured window
				}
				switch {
				case err != nil:
					w.fail(t1, "transport", err.Error())
				case st != 200:
					code := "?"
					if m := s3Code.FindSubmatch(got); m != nil {
						code = string(m[1])
					}
					w.fail(t1, fmt.Sprintf("http_%d_%s", st, code), string(got))
				case c.op == "get" && !bytes.Equal(got, body):
					w.fail(t1, "content_mismatch", fmt.Sprintf("%s: got %d bytes, want %d (seed %d)", path, len(got), len(body), c.seed))
				default:
					w.lat = append(w.lat, t1.Sub(t0).Nanoseconds())
				}
			}
		}(rand.New(rand.NewPCG(uint64(i), c.seed)))
	}
	wg.Wait()
	sampled.Wait()

	res := result{Op: c.op, Endpoint: c.endpoint, Bucket: c.bucket, Size: c.size, Conns: c.conns, DurationS: c.duration.Seconds(), WarmupS: c.warmup.Seconds(), Errors: map[string]int{}, ErrorSample: map[string]string{}}
	var all []int64
	for _, w := range workers {
		all = append(all, w.lat...)
		for k, v := range w.errs {
			res.Errors[k] += v
			if _, ok := res.ErrorSample[k]; !ok {
				res.ErrorSample[k] = w.sample[k]
			}
		}
	}
	res.Ops = len(all)
	res.OpsPerS = float64(res.Ops) / c.duration.Seconds()
	res.MiBPerS = res.OpsPerS * float64(c.size) / (1 << 20)
	res.LatencyMs = percentiles(all)
	if c.op == "put" {
		res.Objects = c.start + next.Load()
	} else {
		res.Objects = c.objects
	}
	res.TotalOK = totalOK.Load()
	res.PayloadHead = hex.EncodeToString(body[:min(32, len(body))])
	res.CPU, res.Machine = cpuReport(before, after, res.Ops)
	return res
}

func percentiles(v []int64) map[string]float64 {
	m := map[string]float64{}
	if len(v) == 0 {
		return m
	}
	sort.Slice(v, func(i, j int) bool { return v[i] < v[j] })
	at := func(q float64) float64 {
		i := int(q*float64(len(v))+0.5) - 1
		i = max(0, min(i, len(v)-1))
		return float64(v[i]) / 1e6
	}
	var sum int64
	for _, x := range v {
		sum += x
	}
	m["p50"], m["p90"], m["p99"], m["p999"] = at(0.50), at(0.90), at(0.99), at(0.999)
	m["max"] = float64(v[len(v)-1]) / 1e6
	m["mean"] = float64(sum) / float64(len(v)) / 1e6
	return m
}

// ---------------------------------------------------------------- CPU accounting (Linux /proc)

const hz = 100 // USER_HZ: the unit of /proc/*/stat times on Linux

type snapshot struct {
	at          time.Time
	groups      map[string]int64 // ticks
	client      float64          // seconds
	busy, steal int64            // machine ticks
	irq         int64            // machine ticks in irq + softirq (loopback traffic is processed there)
	kthreads    int64            // ticks of kernel threads (disk writeback, journal, …)
	activeOpens int64
}

func parsePids(s string) (map[string]int, error) {
	m := map[string]int{}
	for _, part := range strings.Split(s, ",") {
		if part == "" {
			continue
		}
		name, pid, ok := strings.Cut(part, "=")
		n, err := strconv.Atoi(pid)
		if !ok || err != nil || name == "" || name == "client" {
			return nil, fmt.Errorf("-pids: want name=pid,… (name not 'client'), got %q", part)
		}
		m[name] = n
	}
	return m, nil
}

func take(groups map[string]int) snapshot {
	s := snapshot{at: time.Now(), groups: map[string]int64{}}
	for name, pid := range groups {
		s.groups[name] = treeTicks(pid)
	}
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) == nil {
		s.client = float64(ru.Utime.Nano()+ru.Stime.Nano()) / 1e9
	}
	if b, err := os.ReadFile("/proc/stat"); err == nil {
		f := strings.Fields(strings.SplitN(string(b), "\n", 2)[0])
		var total int64
		vals := make([]int64, 0, 8)
		for _, x := range f[1:min(9, len(f))] {
			n, _ := strconv.ParseInt(x, 10, 64)
			vals = append(vals, n)
			total += n
		}
		if len(vals) == 8 {
			s.steal = vals[7]
			s.busy = total - vals[3] - vals[4] - vals[7] // minus idle, iowait, steal
			s.irq = vals[5] + vals[6]
		}
	}
	s.activeOpens = tcpActiveOpens()
	s.kthreads = kernelThreadTicks()
	return s
}

// kernelThreadTicks sums utime+stime of kthreadd (pid 2) and its children: the kernel's own threads, which do the
// disk writeback and journalling of MinIO's PUTs, so their time is part of the load under test, not "other".
func kernelThreadTicks() int64 {
	dirs, _ := os.ReadDir("/proc")
	var sum int64
	for _, d := range dirs {
		pid, err := strconv.Atoi(d.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile("/proc/" + d.Name() + "/stat")
		if err != nil {
			continue
		}
		st := string(b)
		i := strings.LastIndexByte(st, ')')
		if i < 0 || i+2 > len(st) {
			continue
		}
		f := strings.Fields(st[i+2:]) // f[1] is the ppid (field 4); utime, stime are f[11], f[12]
		if len(f) > 12 && (pid == 2 || f[1] == "2") {
			u, _ := strconv.ParseInt(f[11], 10, 64)
			k, _ := strconv.ParseInt(f[12], 10, 64)
			sum += u + k
		}
	}
	return sum
}

// tcpActiveOpens reads Tcp: ActiveOpens from /proc/net/snmp (a header line of names, then a line of values).
func tcpActiveOpens() int64 {
	b, err := os.ReadFile("/proc/net/snmp")
	if err != nil {
		return 0
	}
	var names []string
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) == 0 || f[0] != "Tcp:" {
			continue
		}
		if names == nil {
			names = f
			continue
		}
		for i, n := range names {
			if n == "ActiveOpens" && i < len(f) {
				v, _ := strconv.ParseInt(f[i], 10, 64)
				return v
			}
		}
	}
	return 0
}

// treeTicks is utime+stime of a process and all its live descendants (kesd runs worker processes).
func treeTicks(pid int) int64 {
	var sum int64
	if b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid)); err == nil {
		s := string(b)
		if i := strings.LastIndexByte(s, ')'); i > 0 {
			f := strings.Fields(s[i+2:]) // f[0] is field 3 (state); utime, stime are fields 14, 15
			if len(f) > 12 {
				u, _ := strconv.ParseInt(f[11], 10, 64)
				k, _ := strconv.ParseInt(f[12], 10, 64)
				sum += u + k
			}
		}
	}
	tasks, _ := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
	for _, t := range tasks {
		kids, _ := os.ReadFile(fmt.Sprintf("/proc/%d/task/%s/children", pid, t.Name()))
		for _, k := range strings.Fields(string(kids)) {
			if n, err := strconv.Atoi(k); err == nil {
				sum += treeTicks(n)
			}
		}
	}
	return sum
}

func cpuReport(a, b snapshot, ops int) (map[string]cpu, machine) {
	secs := b.at.Sub(a.at).Seconds()
	out := map[string]cpu{}
	mk := func(s float64) cpu {
		c := cpu{Seconds: s, Cores: s / secs}
		if ops > 0 {
			c.UsPerOp = s * 1e6 / float64(ops)
		}
		return c
	}
	ours := b.client - a.client
	out["client"] = mk(ours)
	for name, t := range b.groups {
		s := float64(t-a.groups[name]) / hz
		out[name] = mk(s)
		ours += s
	}
	busy := float64(b.busy-a.busy) / hz / secs
	irq := float64(b.irq-a.irq) / hz / secs
	kthreads := float64(b.kthreads-a.kthreads) / hz / secs
	return out, machine{
		BusyCores: busy, IRQCores: irq, KernelThreadCores: kthreads, StealCores: float64(b.steal-a.steal) / hz / secs,
		OtherCores: max(0, busy-irq-kthreads-ours/secs), TCPActiveOpens: b.activeOpens - a.activeOpens,
	}
}
