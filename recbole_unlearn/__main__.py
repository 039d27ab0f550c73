from recbole_unlearn.cli import main

raise SystemExit(main())
