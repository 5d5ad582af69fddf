"""Alarm management (ISA-18.2 / IEC 62682): definitions, the engine, the journal port."""
