from hodei.cli import main

main()
