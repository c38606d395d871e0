from trivpn.cli.main import main

raise SystemExit(main())
