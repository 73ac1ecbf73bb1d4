"""specs — what to train, as data: a :class:`Recipe`, the competitions and their default and book
recipes, the two write-ups, and the tricks a recipe names turned into training objects.

May import: utils, parallel, data, train, models.
"""
from ..utils.exports import lazy_exports

#: public name -> the module of this room that defines it
EXPORTS = {
    "Recipe": "recipe",
    "Competition": "competitions",
    "COMPETITIONS": "competitions",
    "get_competition": "competitions",
    "recipe_for": "competitions",
    "get_writeup": "writeups",
    "list_writeups": "writeups",
    "check_recipe": "tricks",
    "make_schedule": "tricks",
    "make_mixing": "tricks",
}
__all__ = list(EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, EXPORTS)
