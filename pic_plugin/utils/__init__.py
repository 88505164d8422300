from .config_check import check_custom_imports

__all__ = ['check_custom_imports']
