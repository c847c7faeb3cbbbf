// An empty stand-in for vbom.ml/util, which sits in external-dns' module
// graph (through an old kubectl) but is no longer served. Nothing imports it.
module vbom.ml/util

go 1.20
