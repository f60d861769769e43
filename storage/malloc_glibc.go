//go:build linux && cgo

package storage

/*
#include <malloc.h>

// fpagent_tune_malloc keeps DuckDB's freed blocks in the C heap for reuse.
// By default glibc serves each 256 KiB block with its own mmap (the
// threshold adapts upwards only as far as the sizes it has seen freed) and
// returns freed memory at the top of the heap to the kernel past 128 KiB,
// so every flush faults its blocks in anew; on a VM a page fault costs
// enough that this was 14% of the agent's CPU while it recovered a WAL
// backlog. A C library without these knobs (musl) is left as it is.
static void fpagent_tune_malloc(int mmap_threshold, int trim_threshold) {
#if defined(M_MMAP_THRESHOLD) && defined(M_TRIM_THRESHOLD)
	mallopt(M_MMAP_THRESHOLD, mmap_threshold);
	mallopt(M_TRIM_THRESHOLD, trim_threshold);
#endif
}
*/
import "C"

import "sync"

// Blocks of up to mallocMmapThreshold come from the heap, and up to
// mallocTrimThreshold of free memory at its top is kept for the next
// flush rather than returned to the kernel. DuckDB's own use stays bound by
// memory_limit; this only decides what malloc keeps of what DuckDB freed.
const (
	mallocMmapThreshold = 32 << 20
	mallocTrimThreshold = 64 << 20
)

var tuneMallocOnce sync.Once

// tuneMalloc applies the settings above once per process.
func tuneMalloc() {
	tuneMallocOnce.Do(func() {
		C.fpagent_tune_malloc(C.int(mallocMmapThreshold), C.int(mallocTrimThreshold))
	})
}
