module stateful-kes/bench/s3load

go 1.25
