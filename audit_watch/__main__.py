from audit_watch.cli.main import main

main()
