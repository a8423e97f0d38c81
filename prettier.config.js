// One line width (120) for all code; the rest is the house style the code already had.
export default {
  printWidth: 120,
  singleQuote: true,
  trailingComma: 'all',
};
