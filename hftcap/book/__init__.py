"""The books: views of the C order books and the offline replay (`hftcap book`)."""
