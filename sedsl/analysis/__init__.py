"""Running a built model over data: `sedsl train` and `sedsl excite` (the SE paper's analysis).

Above lower and cost, below the CLI: nothing else in sedsl imports this package. scikit-learn
(the digits), Pillow (image folders) and matplotlib (figures) are optional extras."""
