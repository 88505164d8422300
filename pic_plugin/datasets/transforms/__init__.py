from .seeded_by_visit import SeededByVisit

__all__ = ['SeededByVisit']
