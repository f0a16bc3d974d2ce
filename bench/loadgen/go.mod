module stateful-kes/bench/loadgen

go 1.25
