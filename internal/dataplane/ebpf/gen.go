package ebpf

// The BPF objects and their Go bindings (socklb_bpfel.go, socklb_bpfel.o) are
// generated from bpf/socklb.c and committed, so building weir needs no clang.
// Regenerate with `go generate ./internal/dataplane/ebpf` (clang, llvm-strip and
// libbpf-dev's headers); TestGeneratedUpToDate checks the committed files match.

//go:generate go tool bpf2go -tags linux -target bpfel -type svc_key -type svc_value -type backend -type config -type aff_key -type aff_value -type member_key socklb bpf/socklb.c -- -O2 -g -Wall -Werror -I/usr/include/x86_64-linux-gnu
