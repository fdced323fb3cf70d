"""Applications built on the library, which never imports them: the command line
(:mod:`vlpart.apps.cli`, one module per command), the web demo (:mod:`vlpart.apps.demo`, needs
the ``demo`` extra) and the quickstart with its synthetic parts world
(:mod:`vlpart.apps.quickstart`)."""
