// Wrapper module that builds SeaweedFS' weed (the local S3-compatible store) at the version
// scripts/versions.env pins.
module lvm-rollout/tools/seaweedfs

go 1.26.6

require github.com/seaweedfs/seaweedfs v0.0.0-20261109003541-7506e5f91cd6
