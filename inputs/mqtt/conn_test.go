package mqtt

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"time"
)

// loopbackPair returns both ends of a real TCP connection on 127.0.0.1.
func loopbackPair(t *testing.T) (client, server net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, _ := ln.Accept()
		accepted <- c
	}()
	client, err = net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	server = <-accepted
	if server == nil {
		t.Fatal("accept failed")
	}
	t.Cleanup(func() { client.Close(); server.Close() })
	return client, server
}

// Packets written from several goroutines, as paho's do, arrive whole and,
// per goroutine, in order; what was written before Close is delivered.
func TestBrokerConnCoalescesInOrder(t *testing.T) {
	cases := []struct {
		name             string
		writers, packets int
		size             int
	}{
		{"one writer, PUBACK-sized", 1, 5000, 4},
		{"four writers", 4, 2000, 4},
		{"packets over the pending bound", 2, 20, maxPending + 100},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c, s := loopbackPair(t)
			bc := newBrokerConn(c)
			got := make(chan []byte, 1)
			go func() {
				b, _ := io.ReadAll(s)
				got <- b
			}()
			var wg sync.WaitGroup
			for w := range tc.writers {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for i := range tc.packets {
						p := bytes.Repeat([]byte{byte('a' + w)}, tc.size)
						copy(p, fmt.Sprintf("%c%03d", 'a'+w, i%1000))
						if _, err := bc.Write(p); err != nil {
							t.Errorf("write: %v", err)
							return
						}
					}
				}()
			}
			wg.Wait()
			if err := bc.Close(); err != nil {
				t.Fatalf("close: %v", err)
			}
			b := <-got
			if want := tc.writers * tc.packets * tc.size; len(b) != want {
				t.Fatalf("peer read %d bytes, want %d", len(b), want)
			}
			next := make([]int, tc.writers)
			for off := 0; off < len(b); off += tc.size {
				p := b[off : off+tc.size]
				w := int(p[0] - 'a')
				if w < 0 || w >= tc.writers {
					t.Fatalf("packet at %d from unknown writer %q", off, p[0])
				}
				var i int
				if _, err := fmt.Sscanf(string(p[1:min(4, len(p))]), "%d", &i); tc.size >= 4 && (err != nil || i != next[w]%1000) {
					t.Fatalf("writer %d: packet %d out of order at byte %d (want %d)", w, i, off, next[w]%1000)
				}
				next[w]++
			}
		})
	}
}

// A failed write is reported by later writes, and Close does not hang.
func TestBrokerConnWriteError(t *testing.T) {
	c, s := loopbackPair(t)
	bc := newBrokerConn(c)
	s.Close()
	c.(*net.TCPConn).CloseWrite() // writes now fail at once
	deadline := time.Now().Add(10 * time.Second)
	var err error
	for err == nil && time.Now().Before(deadline) {
		_, err = bc.Write([]byte{0x40, 2, 0, 1})
		time.Sleep(time.Millisecond)
	}
	if err == nil {
		t.Fatal("writes after the connection broke kept succeeding")
	}
	if _, err2 := bc.Write([]byte{1}); err2 == nil {
		t.Error("the write error is not sticky")
	}
	// paho's reader must see the failure as an error of its own kind, not
	// as a connection closed on purpose (which it would ignore).
	if _, rerr := bc.Read(make([]byte, 8)); rerr == nil || errors.Is(rerr, net.ErrClosed) || !strings.Contains(rerr.Error(), "write to broker") {
		t.Errorf("read after the write error: %v", rerr)
	}
	done := make(chan struct{})
	go func() { bc.Close(); close(done) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("Close hung after a write error")
	}
	if _, err := bc.Write([]byte{1}); err == nil {
		t.Error("write after Close succeeded")
	}
}

// Close returns within its flush timeout when the peer stops reading and
// the socket is full; blocked writers are released.
func TestBrokerConnCloseWithStuckPeer(t *testing.T) {
	c, _ := loopbackPair(t) // the server end never reads
	bc := newBrokerConn(c)
	released := make(chan error, 1)
	go func() {
		p := make([]byte, 32<<10)
		for {
			if _, err := bc.Write(p); err != nil {
				released <- err
				return
			}
		}
	}()
	time.Sleep(200 * time.Millisecond) // fill the socket buffers
	start := time.Now()
	bc.Close()
	if d := time.Since(start); d > closeFlushTimeout+2*time.Second {
		t.Errorf("Close took %v", d)
	}
	select {
	case err := <-released:
		if !errors.Is(err, net.ErrClosed) && err == nil {
			t.Errorf("blocked writer got %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("a writer blocked on a full buffer was not released by Close")
	}
}

func TestWindowLearnsLargestRecentBatch(t *testing.T) {
	var w window
	steps := []struct {
		note int
		want int
	}{
		{0, 1}, {5, 5}, {20, 20}, {3, 20}, {44, 44},
	}
	for _, s := range steps {
		w.note(s.note)
		if got := w.size(); got != s.want {
			t.Fatalf("after note(%d): size %d, want %d", s.note, got, s.want)
		}
	}
	for range windowMemory - 1 {
		w.note(2)
	}
	if got := w.size(); got != 44 {
		t.Fatalf("size %d before 44 is forgotten, want 44", got)
	}
	w.note(2)
	if got := w.size(); got != 2 {
		t.Fatalf("size %d after %d smaller batches, want 2", got, windowMemory)
	}
}

// gather takes everything queued, waits for more only while the batch is
// smaller than the window, and never longer than gatherMax.
func TestGather(t *testing.T) {
	cases := []struct {
		name          string
		window        int
		queued, later int // items in the queue at the start, and sent 50 ms later
		size          int // payload bytes of each
		want          int
	}{
		{"takes all queued beyond the window", 3, 8, 0, 0, 8},
		{"does not wait once the window is reached", 6, 6, 4, 0, 6},
		{"gives up after gatherMax", 10, 2, 4, 0, 2},
		{"batch capacity bounds it", 100, 40, 0, 0, 32},
		{"payload bytes bound it", 100, 40, 0, 300 << 10, 4}, // 4 × 300 KiB reach 1 MiB
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			in := &Input{queue: make(chan item, 64), stopping: make(chan struct{})}
			in.window.note(tc.window)
			for range tc.queued {
				in.queue <- item{size: tc.size}
			}
			if tc.later > 0 {
				go func() {
					time.Sleep(50 * time.Millisecond) // 100 × gatherMax
					for range tc.later {
						in.queue <- item{size: tc.size}
					}
				}()
			}
			start := time.Now()
			b := batch{items: make([]item, 0, 32)}
			in.gather(&b)
			if len(b.items) != tc.want || b.bytes != tc.want*tc.size {
				t.Errorf("gathered %d (%d bytes), want %d", len(b.items), b.bytes, tc.want)
			}
			if d := time.Since(start); d > 5*time.Second {
				t.Errorf("gather took %v", d)
			}
		})
	}
}
