from divgen.cli import main

raise SystemExit(main())
