from trivpn.cli import main

raise SystemExit(main())
