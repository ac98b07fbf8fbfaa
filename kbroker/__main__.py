from kbroker.cli import main

main()
