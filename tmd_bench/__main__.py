from tmd_bench.cli import main

main()
