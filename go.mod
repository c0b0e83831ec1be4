module github.com/stratovirt-go/stratovirt

go 1.26.0

require (
	github.com/containerd/log v0.2.0
	golang.org/x/sys v0.50.0
)

require github.com/sirupsen/logrus v1.10.2 // indirect
