package bench

import "math/bits"

// trackWindow is how far (in sequence numbers) a publication may arrive out
// of order and still be matched; older missing ones are counted lost when the
// window moves past them. It costs trackWindow/8 bytes per subscriber.
const trackWindow = 8192

// tracker accounts for one subscriber's view of one stream of sequence
// numbers 0, 1, 2, …: what arrived, twice, out of order, or never. It is
// owned by the subscriber's read goroutine; no locking.
type tracker struct {
	base      uint64 // every seq < base is settled (received or counted lost)
	maxSeen   uint64
	any       bool
	received  uint64
	dup       uint64
	reordered uint64
	late      uint64 // arrived after the window had moved past it (already counted lost)
	lost      uint64 // settled as missing while sliding the window
	bits      [trackWindow / 64]uint64
}

func (t *tracker) bit(s uint64) (word *uint64, mask uint64) {
	i := s % trackWindow
	return &t.bits[i/64], 1 << (i % 64)
}

// add records the arrival of seq s.
func (t *tracker) add(s uint64) {
	if s < t.base {
		t.late++
		return
	}
	if s >= t.base+trackWindow {
		t.slide(s - trackWindow + 1)
	}
	w, m := t.bit(s)
	if *w&m != 0 {
		t.dup++
		return
	}
	*w |= m
	t.received++
	if t.any && s < t.maxSeen {
		t.reordered++
	}
	if !t.any || s > t.maxSeen {
		t.maxSeen = s
	}
	t.any = true
}

// slide settles every seq below nb: unset ones are lost.
func (t *tracker) slide(nb uint64) {
	if nb <= t.base {
		return
	}
	if nb-t.base >= trackWindow {
		// Everything in the window is settled, and everything between the
		// window's end and nb was never seen.
		for i := range t.bits {
			t.lost += 64 - uint64(bits.OnesCount64(t.bits[i]))
			t.bits[i] = 0
		}
		t.lost += nb - t.base - trackWindow
		t.base = nb
		return
	}
	for ; t.base < nb; t.base++ {
		w, m := t.bit(t.base)
		if *w&m == 0 {
			t.lost++
		}
		*w &^= m
	}
}

// finish settles the stream at its end: published seqs were sent (0 …
// published-1). It returns the total number of missing seqs.
func (t *tracker) finish(published uint64) uint64 {
	if published > t.base {
		t.slide(published)
	}
	return t.lost
}
