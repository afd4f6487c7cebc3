package bench

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"sync"
	"sync/atomic"
	"time"
)

// Worker processes: the parent starts K copies of its own executable with
// WorkerArgs and WorkerEnv, writes a fleetSpec as the first line of the
// child's stdin, then commands ({"cmd":"connect"}, {"cmd":"drop"} and
// {"cmd":"nodrop"} around publishing in the recovery scenario,
// {"cmd":"finish",…}) one per line. The child answers on stdout with JSON
// lines: "prepared" once its tokens are minted (with its CPU so far),
// "progress" four times a second, "ready" when its connections are open, and
// "result" at the end. Its stderr passes through. When its stdin closes the
// child closes everything and exits.

// WorkerArgs are the arguments a worker process is started with; the herald
// binary routes "bench worker" to WorkerMain.
var WorkerArgs = []string{"bench", "worker"}

// WorkerEnv is set in a worker's environment (for test binaries, whose
// TestMain calls WorkerMain when it is present).
const WorkerEnv = "HERALD_BENCH_WORKER=1"

type workerCmd struct {
	Cmd    string    `json:"cmd"`
	Finish finishMsg `json:"finish"`
}

type workerMsg struct {
	Type     string       `json:"type"`
	Progress progress     `json:"progress"`
	Subs     []int        `json:"subs,omitempty"`
	Result   *fleetResult `json:"result,omitempty"`
	Error    string       `json:"error,omitempty"`
}

// WorkerMain runs one worker: it reads its spec and commands from stdin and
// writes JSON lines to stdout. It ignores interrupts: the parent decides when
// to stop and asks for a (partial) result.
func WorkerMain(stdin io.Reader, stdout io.Writer) error {
	signal.Ignore(os.Interrupt)
	enc := json.NewEncoder(stdout)
	w := &worker{enc: enc}
	sc := bufio.NewScanner(stdin)
	sc.Buffer(make([]byte, 64<<10), 16<<20)
	if !sc.Scan() {
		return errors.New("worker: no spec on stdin")
	}
	var spec fleetSpec
	if err := json.Unmarshal(sc.Bytes(), &spec); err != nil {
		return fmt.Errorf("worker: bad spec: %w", err)
	}
	f, err := newLocalFleet(spec)
	if err != nil {
		w.send(workerMsg{Type: "error", Error: err.Error()})
		return err
	}
	w.f = f
	// The CPU reading in prepared is where the connect phase's starts:
	// start-up and token minting are not connecting.
	w.send(workerMsg{Type: "prepared", Progress: progress{CPUSeconds: selfCPU().Seconds()}})

	cmds := make(chan workerCmd)
	go func() {
		defer close(cmds)
		for sc.Scan() {
			var c workerCmd
			if json.Unmarshal(sc.Bytes(), &c) == nil {
				cmds <- c
			}
		}
	}()
	return w.serve(cmds)
}

// worker is WorkerMain's state once its fleet is made.
type worker struct {
	f     *localFleet
	enc   *json.Encoder
	encMu sync.Mutex
	// connectDone is closed when the connect command's connect returns
	// (nil once reported); connecting says the command came.
	connectDone chan struct{}
	connecting  bool
	p99         float64
}

// send writes one message to the parent.
func (w *worker) send(m workerMsg) {
	w.encMu.Lock()
	defer w.encMu.Unlock()
	_ = w.enc.Encode(m)
}

// prog is the fleet's progress with the worker's CPU and latest p99.
func (w *worker) prog() progress {
	p := w.f.progress()
	p.P99ms = w.p99
	p.CPUSeconds = selfCPU().Seconds()
	return p
}

// serve reports progress every 250 ms and carries out the parent's
// commands until finish (or the end of stdin).
func (w *worker) serve(cmds <-chan workerCmd) error {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ticker := time.NewTicker(250 * time.Millisecond)
	defer ticker.Stop()
	w.connectDone = make(chan struct{})
	ticks := 0
	for {
		select {
		case <-ticker.C:
			if ticks++; ticks%4 == 0 {
				w.p99 = w.f.intervalP99()
			}
			w.send(workerMsg{Type: "progress", Progress: w.prog()})
		case <-w.connectDone:
			w.connectDone = nil
			w.send(workerMsg{Type: "ready", Progress: w.prog(), Subs: w.f.subscribers()})
		case c, ok := <-cmds:
			if !ok || c.Cmd == "finish" {
				return w.finish(cancel, c, ok)
			}
			w.command(ctx, c)
		}
	}
}

// command carries out connect, drop or nodrop.
func (w *worker) command(ctx context.Context, c workerCmd) {
	switch c.Cmd {
	case "connect":
		if !w.connecting {
			w.connecting = true
			done := w.connectDone
			go func() { _ = w.f.connect(ctx); close(done) }()
		}
	case "drop", "nodrop":
		w.f.dropping(c.Cmd == "drop")
	}
}

// finish stops the fleet and sends its result (unless the parent is gone:
// ok false).
func (w *worker) finish(cancel context.CancelFunc, c workerCmd, ok bool) error {
	atFinish := selfCPU().Seconds()
	cancel()
	w.f.dropping(false)
	if w.connecting && w.connectDone != nil {
		<-w.connectDone
	}
	res, err := w.f.finish(c.Finish)
	if err != nil {
		w.send(workerMsg{Type: "error", Error: err.Error()})
		return err
	}
	res.CPUSeconds, res.CPUAtFinish = selfCPU().Seconds(), atFinish
	if ok {
		w.send(workerMsg{Type: "result", Result: res})
	}
	return nil
}

// remoteFleet is a worker process seen from the parent.
type remoteFleet struct {
	cmd    *exec.Cmd
	stdin  io.WriteCloser
	last   atomic.Pointer[progress]
	ready  chan workerMsg
	result chan workerMsg
	failed chan error
	subs   []int
	encMu  sync.Mutex
	enc    *json.Encoder
}

// startWorker starts a worker process for spec and waits until it has
// prepared (minted its tokens).
func startWorker(ctx context.Context, exe string, spec fleetSpec, stderr io.Writer) (*remoteFleet, error) {
	cmd := exec.Command(exe, WorkerArgs...)
	cmd.Env = append(os.Environ(), WorkerEnv)
	cmd.Stderr = stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start worker: %w", err)
	}
	r := &remoteFleet{
		cmd: cmd, stdin: stdin, enc: json.NewEncoder(stdin),
		ready: make(chan workerMsg, 1), result: make(chan workerMsg, 1), failed: make(chan error, 1),
	}
	prepared := make(chan struct{})
	go r.readMessages(stdout, prepared)
	if err := r.encode(spec); err != nil {
		r.kill()
		return nil, err
	}
	select {
	case <-prepared:
		return r, nil
	case err := <-r.failed:
		r.kill()
		return nil, err
	case <-ctx.Done():
		r.kill()
		return nil, ctx.Err()
	case <-time.After(2 * time.Minute):
		r.kill()
		return nil, errors.New("worker did not start in 2 minutes")
	}
}

// readMessages reads the worker's messages until it exits, closing
// prepared at the first "prepared".
func (r *remoteFleet) readMessages(stdout io.Reader, prepared chan struct{}) {
	sc := bufio.NewScanner(stdout)
	sc.Buffer(make([]byte, 64<<10), 64<<20)
	var once sync.Once
	for sc.Scan() {
		var m workerMsg
		if err := json.Unmarshal(sc.Bytes(), &m); err != nil {
			continue
		}
		switch m.Type {
		case "prepared":
			p := m.Progress
			r.last.Store(&p)
			once.Do(func() { close(prepared) })
		case "progress":
			p := m.Progress
			r.last.Store(&p)
		case "ready":
			p := m.Progress
			r.last.Store(&p)
			r.ready <- m
		case "result":
			r.result <- m
		case "error":
			r.failed <- errors.New("worker: " + m.Error)
			return
		}
	}
	select {
	case r.failed <- errors.New("worker exited"):
	default:
	}
}

func (r *remoteFleet) encode(v any) error {
	r.encMu.Lock()
	defer r.encMu.Unlock()
	return r.enc.Encode(v)
}

func (r *remoteFleet) kill() {
	_ = r.stdin.Close()
	if r.cmd.Process != nil {
		_ = r.cmd.Process.Kill()
	}
	_ = r.cmd.Wait()
}

func (r *remoteFleet) connect(ctx context.Context) error {
	if err := r.encode(workerCmd{Cmd: "connect"}); err != nil {
		return err
	}
	select {
	case m := <-r.ready:
		r.subs = m.Subs
		return nil
	case err := <-r.failed:
		r.failed <- err
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (r *remoteFleet) progress() progress {
	if p := r.last.Load(); p != nil {
		return *p
	}
	return progress{}
}

func (r *remoteFleet) subscribers() []int { return r.subs }

func (r *remoteFleet) dropping(on bool) {
	cmd := "nodrop"
	if on {
		cmd = "drop"
	}
	_ = r.encode(workerCmd{Cmd: cmd}) // a worker that is gone shows at finish
}

func (r *remoteFleet) finish(fin finishMsg) (*fleetResult, error) {
	defer r.kill()
	if err := r.encode(workerCmd{Cmd: "finish", Finish: fin}); err != nil {
		// Most likely it is gone (a broken pipe): say that rather.
		select {
		case err = <-r.failed:
		case <-time.After(time.Second):
		}
		return nil, r.gone(err)
	}
	select {
	case m := <-r.result:
		_ = r.stdin.Close()
		_ = r.cmd.Wait()
		return m.Result, nil
	case err := <-r.failed:
		select {
		case m := <-r.result:
			// It reported, then exited (its output ended): select took the
			// exit, both being ready. The reader hands over the result
			// before the exit, so it is here if there was one.
			_ = r.stdin.Close()
			_ = r.cmd.Wait()
			return m.Result, nil
		default:
		}
		return nil, r.gone(err)
	case <-time.After(2 * time.Minute):
		return nil, errors.New("worker did not report within 2 minutes")
	}
}

// gone ends the worker and returns err with how its process ended.
func (r *remoteFleet) gone(err error) error {
	r.kill()
	if ps := r.cmd.ProcessState; ps != nil {
		return fmt.Errorf("%w (%s)", err, ps)
	}
	return err
}
