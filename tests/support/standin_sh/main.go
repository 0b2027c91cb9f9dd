// A stand-in for /bin/sh in the base image of tests/program/test_cli_images.py: the
// image build runs the real rendered AITER + vLLM Dockerfile, whose RUN steps
// (pip, git clone, setup.py) cannot run here (no network, no toolchain). Each RUN
// prints what it would have run and succeeds. Static (CGO_ENABLED=0): the base image
// holds nothing else.
package main

import (
	"fmt"
	"os"
	"strings"
)

func main() {
	fmt.Printf("stand-in sh: %s\n", strings.Join(os.Args[1:], " "))
}
