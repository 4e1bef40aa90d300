// A Go program that maps a device (raw syscalls: no libc, and so no preload,
// reaches the mapping) and counts at its offset 0 nonstop, as a Go service
// using device memory would. Prints "ready" once the count runs.
package main

import (
	"fmt"
	"os"
	"sync/atomic"
	"syscall"
	"unsafe"
)

func main() {
	f, err := os.OpenFile(os.Args[1], os.O_RDWR, 0)
	if err != nil {
		panic(err)
	}
	mem, err := syscall.Mmap(int(f.Fd()), 0, 2<<20, syscall.PROT_READ|syscall.PROT_WRITE, syscall.MAP_SHARED)
	if err != nil {
		panic(err)
	}
	counter := (*uint64)(unsafe.Pointer(&mem[0]))
	go func() {
		for {
			atomic.AddUint64(counter, 1)
		}
	}()
	for atomic.LoadUint64(counter) < 1000 {
	}
	fmt.Println("ready")
	select {}
}
