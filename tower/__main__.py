from tower.cli import main

main()
