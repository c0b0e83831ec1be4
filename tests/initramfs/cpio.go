// Package initramfs writes "newc" cpio archives, the format the kernel
// unpacks as an initramfs, and builds the small busybox images the lab and
// the boot tests use.
package initramfs

import (
	"fmt"
	"io"
)

// Writer writes a "newc" cpio archive: directories, regular files and
// symlinks, all owned by root.
type Writer struct {
	w    io.Writer
	ino  uint32
	err  error
	size int64
}

func (c *Writer) header(name string, mode uint32, size int) {
	if c.err != nil {
		return
	}
	c.ino++
	// 110-byte header + name + NUL, padded to 4; then data padded to 4.
	h := fmt.Sprintf("070701%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X",
		c.ino, mode, 0, 0, 1, 0, size, 0, 0, 0, 0, len(name)+1, 0)
	c.write([]byte(h))
	c.write([]byte(name + "\x00"))
	c.pad()
}

func (c *Writer) write(p []byte) {
	if c.err != nil {
		return
	}
	n, err := c.w.Write(p)
	c.size += int64(n)
	c.err = err
}

func (c *Writer) pad() {
	if r := c.size % 4; r != 0 {
		c.write(make([]byte, 4-r))
	}
}

// Dir adds a directory.
func (c *Writer) Dir(name string) { c.header(name, 0o040755, 0) }

// File adds a regular file with the given permission bits.
func (c *Writer) File(name string, perm uint32, data []byte) {
	c.header(name, 0o100000|perm, len(data))
	c.write(data)
	c.pad()
}

// Symlink adds a symbolic link.
func (c *Writer) Symlink(name, target string) {
	c.header(name, 0o120777, len(target))
	c.write([]byte(target))
	c.pad()
}

// NewWriter returns a Writer that writes to w.
func NewWriter(w io.Writer) *Writer { return &Writer{w: w} }

// Close writes the trailer. It does not close the underlying writer.
func (c *Writer) Close() error {
	c.header("TRAILER!!!", 0, 0)
	return c.err
}
