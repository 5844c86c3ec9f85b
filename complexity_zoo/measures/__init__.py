"""The built-in measures, one module per family.

Importing this package registers nothing: the registry finds the public modules here with
``pkgutil`` and imports them on its first lookup (see ``complexity_zoo.registry``), so adding a
family is adding a module. Private helpers start with ``_``.
"""
