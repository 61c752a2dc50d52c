// placeholder, replaced below
print("MirrorBenchmark")
