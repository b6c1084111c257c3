from etrans.cli import main

main()
