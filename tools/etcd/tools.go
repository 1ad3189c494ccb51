//go:build tools

// Package tools only records the build dependencies of this wrapper module.
package tools

import _ "go.etcd.io/etcd/server/v3/etcdmain"
