export * from './constants.js';
export * from './header.js';
export * from './payloads.js';
export * from './requests.js';
