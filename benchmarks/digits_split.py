"""Why Digits' validation accuracy is above its test accuracy: the file is ordered by writer.

    python -m benchmarks.digits_split

scikit-learn's Digits is UCI optdigits' test file: 1,797 images written by 13 people, stored one
writer after another. tinyvision's fixed split keeps that order (train+validation = the first 1,350
images, test = the last 447), and validation is a random sample of the first 1,350: it shares its
writers with training, the test images do not. Two classic classifiers that have nothing to do with
tinyvision show it: cross-validated on contiguous blocks (writers held out) they score lower than on
random folds, and their accuracy on the last 447 is below a random validation sample's.
"""
from __future__ import annotations

import numpy as np
from sklearn.datasets import load_digits
from sklearn.model_selection import KFold, cross_val_score
from sklearn.neighbors import KNeighborsClassifier, NearestNeighbors
from sklearn.svm import SVC

TRAIN = 1350  # tinyvision's train+validation part; the last 447 images are the test split


def main() -> None:
    x, y = load_digits(return_X_y=True)
    print("accuracy of two classic classifiers (scikit-learn, fixed seeds):")
    for name, make in (("SVM rbf gamma=0.001", lambda: SVC(gamma=0.001)), ("1-nearest neighbour", lambda: KNeighborsClassifier(1))):
        blocks = cross_val_score(make(), x, y, cv=KFold(4, shuffle=False))
        shuffled = cross_val_score(make(), x, y, cv=KFold(4, shuffle=True, random_state=0))
        order = np.random.default_rng(0).permutation(TRAIN)
        fit, val = order[:1200], order[1200:]
        model = make().fit(x[fit], y[fit])
        print(f"  {name}: 4-fold CV on contiguous blocks {blocks.mean():.2%} vs random folds {shuffled.mean():.2%}; "
              f"trained on 1,200 of the first 1,350: random validation 150 {model.score(x[val], y[val]):.2%}, "
              f"last 447 {model.score(x[TRAIN:], y[TRAIN:]):.2%}")
    order = np.random.default_rng(0).permutation(TRAIN)
    neighbours = NearestNeighbors(n_neighbors=1).fit(x[order[:1200]])
    print(f"mean distance to the nearest training image: validation {neighbours.kneighbors(x[order[1200:]])[0].mean():.1f}, "
          f"test {neighbours.kneighbors(x[TRAIN:])[0].mean():.1f} (pixel values 0..16)")


if __name__ == "__main__":
    main()
