//go:build tools

// Package tools only records the build dependencies of this wrapper module: SeaweedFS' weed
// binary, whose S3 gateway is the local stack's object store.
package tools

import _ "github.com/seaweedfs/seaweedfs/weed/command"
