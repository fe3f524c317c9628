// Tests are compiled by `tsc` (npm test runs it first) and jest runs the JavaScript in dist/.
module.exports = {
  testEnvironment: 'node',
  roots: ['<rootDir>/dist/test'],
  testMatch: ['**/*.test.js'],
  testTimeout: 600000,
  maxWorkers: 2,
};
