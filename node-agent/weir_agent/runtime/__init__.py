"""The engine: reconciles policies into loaded programs and keeps the savings accounts."""
